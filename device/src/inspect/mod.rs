//! The shared-memory inspector (feature `std`): decode a CBD v3 transport — a live
//! `/dev/shm` file while a pair runs, a saved copy, or any [`SharedMem`] — and say
//! what is in it and what is wrong with it.
//!
//! [`inspect`] walks the transport info, every host/backend/blkdev record (both
//! copies: CRC, seq, which one is the newest; liveness against a clock), every
//! channel segment in use (owner, mode, ring pointers, SEs in flight, CEs not yet
//! consumed, data-area extents, durability and non-coherent lines) and returns a
//! [`Report`]: plain data, printed as text by [`Report::text`] or as JSON by
//! [`Report::to_json`], with a list of [`Finding`]s (bad CRC, pointer out of range,
//! dead records, a segment listed by two backends, …), each naming where it is.
//!
//! Rules it keeps:
//! * **Read only.** It only calls [`SharedMem::read`] (through [`Shm`]); [`FileMem`]
//!   opens the file read-only and refuses every store.
//! * **The project's layout code only.** Offsets come from [`crate::layout`] (the
//!   `wire!` modules, `chan`, `ctrl`), records are decoded by [`crate::meta`], entries
//!   by [`EntryLayout`], lines by [`crate::channel`]'s codecs, geometry by
//!   [`ChannelGeom`]. There is no offset of its own in this module.
//! * **Everything read is untrusted.** The transport info is validated
//!   ([`TransportInfo::validate`]) before any area is followed; every further read is
//!   bounds-checked by [`Shm`]; counts and lists from shared memory are clamped. Garbage
//!   gives findings, never a panic (`host/tests/inspect.rs` feeds random bytes).
//!
//! [`svg`] draws the layout (transport and one channel segment) from the same code,
//! with the live pointers of a report drawn in.

mod decode;
pub mod svg;
mod text;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::shm::{SharedMem, Shm};
use crate::trace::NoTrace;

pub use decode::inspect;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, normal in a live pair (e.g. a torn copy being rewritten).
    Note,
    /// Probably wrong: a dead party's records, a stale pointer.
    Warning,
    /// Wrong: bad CRC of the only copy, pointer out of range, overlapping owners.
    Error,
}

/// Something the inspector found wrong (or remarkable), and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Where: e.g. `host 0 copy 1`, `segment 3 ctrl.SUBMR_HEAD`.
    pub at: String,
    /// Region offset of the bytes concerned, when there is one.
    pub offset: Option<u64>,
    pub what: String,
}

/// One of the two copies of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyView {
    /// Region offset of the copy.
    pub offset: u64,
    /// Its CRC verifies (an all-zero copy does).
    pub crc_ok: bool,
    /// All bytes zero (never written, or cleared).
    pub zero: bool,
    pub seq: u8,
}

/// A two-copy record slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordView<T> {
    pub id: u32,
    /// Region offset of copy 0.
    pub offset: u64,
    pub copies: [CopyView; 2],
    /// Which copy a reader takes (`meta::pick_latest`), if any verifies.
    pub latest: Option<usize>,
    /// The decoded latest copy.
    pub rec: Option<T>,
    /// `now - alive_ts` in ns (negative: the heartbeat is in the future).
    pub age_ns: Option<i64>,
    /// Heartbeat within the 30 s timeout (`transport::is_alive`).
    pub alive: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostView {
    pub state: &'static str,
    pub alive_ts: u64,
    pub hostname: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendView {
    pub state: &'static str,
    pub host_id: u32,
    pub alive_ts: u64,
    pub dev_size_sectors: u64,
    pub path: String,
    pub n_handlers: u32,
    /// The first `n_handlers` entries (clamped to the array).
    pub handler_channels: Vec<u32>,
    pub features: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlkdevView {
    pub state: &'static str,
    pub alive_ts: u64,
    pub backend_id: u32,
    pub host_id: u32,
    pub mapped_id: u32,
    pub features: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentView {
    pub seg_type: &'static str,
    pub state: &'static str,
    pub flags: u16,
    pub next_seg: u32,
    pub backend_id: u32,
}

/// The transport info as decoded, plus the validation verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransportView {
    pub magic: u64,
    pub version: u16,
    pub flags: u16,
    pub flag_names: Vec<&'static str>,
    pub host_area_off: u64,
    pub host_num: u32,
    pub backend_area_off: u64,
    pub backend_num: u32,
    pub blkdev_area_off: u64,
    pub blkdev_num: u32,
    pub segment_area_off: u64,
    pub segment_size: u32,
    pub segment_num: u32,
    /// `None`: valid; else why `TransportInfo::validate` refused it.
    pub invalid: Option<&'static str>,
}

/// A control line (non-coherent or durability): all zero (never written, or zero
/// values), decoded, or a bad CRC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineView<T> {
    /// Region offset of the line.
    pub offset: u64,
    /// `"zero"` (all zero: it verifies and decodes as zeros), `"ok"`, or `"bad crc"`.
    pub status: &'static str,
    pub value: Option<T>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostLineView {
    pub epoch: u32,
    pub submr_head: u32,
    pub submr_tail: u32,
    pub compr_tail: u32,
    pub base_tid: u64,
    pub tail_tid: u64,
    pub features: u32,
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DevLineView {
    pub ack_epoch: u32,
    pub compr_head: u32,
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DurDevView {
    /// `dur_dev::GEN`: the backend incarnation.
    pub incarnation: u32,
    /// Exclusive watermark: writes with `req_tid < durable_tid` are on media.
    pub durable_tid: u64,
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DurHostView {
    pub power_window_us: u64,
}

/// A management record (latest of its two copies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MgmtView {
    pub copy: usize,
    pub seq: u8,
    pub cmd_seq: u8,
    /// `cmd_op` of the command, `cmd_ret` of the answer.
    pub value: u8,
}

/// The v3 control struct of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CtrlView {
    pub offset: u64,
    pub flags: u64,
    pub submr_head: u32,
    pub submr_tail: u32,
    pub compr_head: u32,
    pub compr_tail: u32,
    pub mgmt_cmd: Option<MgmtView>,
    pub mgmt_ret: Option<MgmtView>,
}

/// A ring pointer the engines follow in the channel's mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PointerView {
    /// Byte position in its ring.
    pub pos: u32,
    /// Entry index (`pos / entry size`).
    pub index: u32,
    /// A legal position (inside the ring, on an entry boundary).
    pub ok: bool,
    /// Where it was read: `ctrl.SUBMR_HEAD`, `nc_host.SUBMR_HEAD`, …
    pub from: &'static str,
}

/// The pointers in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pointers {
    pub submr_head: PointerView,
    pub submr_tail: PointerView,
    pub compr_head: PointerView,
    pub compr_tail: PointerView,
}

/// An SE between `submr_tail` and `submr_head` (submitted, not yet reclaimed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeView {
    /// Byte position in the submission ring.
    pub pos: u32,
    pub offset: u64,
    pub op: &'static str,
    pub flags: u32,
    pub flag_names: Vec<&'static str>,
    pub req_tid: u64,
    pub disk_offset: u64,
    pub len: u32,
    pub data_off: u32,
    pub data_len: u32,
    pub data_crc: u32,
    /// Entry CRC verifies (true when the format has none).
    pub crc_ok: bool,
    /// The payload in the data area matches its `data_crc` (a WRITE's, or a completed
    /// READ's from its CE); `None` when not checked (no payload CRC, or nothing to check).
    pub payload_crc_ok: Option<bool>,
    /// `"done"` (the host consumed the CE), `"completed"` (its CE is published, not
    /// consumed) or `"waiting"` (for the device).
    pub status: &'static str,
}

/// A CE between `compr_tail` and `compr_head` (published, not yet consumed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CeView {
    pub pos: u32,
    pub offset: u64,
    pub req_tid: u64,
    pub result: i32,
    pub result_name: &'static str,
    pub flags: u32,
    pub durable: bool,
    pub data_crc: u32,
    pub crc_ok: bool,
}

/// A data-area extent held by an SE in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExtentView {
    pub req_tid: u64,
    /// Offset in the data area and bytes reserved (4 KiB units).
    pub data_off: u32,
    pub span: u32,
    /// Region ranges `(offset, len)`: two when the extent wraps.
    pub ranges: Vec<(u64, u64)>,
}

/// Where the pieces of a channel segment are (region offsets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GeomView {
    pub ctrl: u64,
    pub compr: u64,
    pub compr_size: u64,
    pub submr: u64,
    pub submr_size: u64,
    pub data: u64,
    pub data_size: u64,
    pub se_size: u32,
    pub ce_size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelView {
    /// `"v3"` (pointers in the control struct) or `"noncoherent"` (own lines).
    pub mode: &'static str,
    pub geom: GeomView,
    pub ctrl: CtrlView,
    pub nc_host: LineView<HostLineView>,
    pub nc_dev: LineView<DevLineView>,
    pub dur_dev: LineView<DurDevView>,
    pub dur_host: LineView<DurHostView>,
    pub pointers: Pointers,
    pub ses: Vec<SeView>,
    pub ces: Vec<CeView>,
    pub extents: Vec<ExtentView>,
    /// Bytes of the data area held by SEs in flight.
    pub data_in_use: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentReport {
    pub id: u32,
    pub record: RecordView<SegmentView>,
    /// Backends whose `handler_channels` list this segment.
    pub listed_by: Vec<u32>,
    /// Blkdevs attached to those backends.
    pub blkdevs: Vec<u32>,
    /// Decoded when the segment is a channel in use.
    pub channel: Option<ChannelView>,
}

/// Everything the inspector read, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub region_size: u64,
    /// The clock heartbeats are judged against (CLOCK_REALTIME ns).
    pub now_ns: u64,
    pub transport: Option<TransportView>,
    /// Records in use (free slots — no valid copy in use, state NONE — are counted only).
    pub hosts: Vec<RecordView<HostView>>,
    pub backends: Vec<RecordView<BackendView>>,
    pub blkdevs: Vec<RecordView<BlkdevView>>,
    /// Segments with a record or listed by a backend.
    pub segments: Vec<SegmentReport>,
    /// Free slots: hosts, backends, blkdevs, segments.
    pub free: [u32; 4],
    pub findings: Vec<Finding>,
}

impl Report {
    /// Pretty JSON (the `--json` output).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
    /// The worst finding's severity.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
    /// Findings at least this severe.
    pub fn findings_at_least(&self, s: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= s)
    }
}

/// A file read with positioned reads, never written: a live `/dev/shm` transport or a
/// saved copy. Each read goes to the file, so a live pair's changes show (a report is
/// not one atomic snapshot). Stores are refused (logged and dropped): the inspector
/// never issues one.
pub struct FileMem {
    file: File,
    len: u64,
}

impl FileMem {
    /// Open `path` read-only.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
    fn refused(&self, off: u64) {
        log::error!("inspect: store at {off:#x} refused (read-only view)");
    }
}

impl SharedMem for FileMem {
    fn size(&self) -> u64 {
        self.len
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        // A short read (the file shrank) or an I/O error reads as zeros.
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("inspect: read at {off:#x}: {e}");
                    break;
                }
            }
        }
        buf[done..].fill(0);
    }
    fn write(&self, off: u64, _data: &[u8]) {
        self.refused(off)
    }
    fn fill(&self, off: u64, _len: u64, _byte: u8) {
        self.refused(off)
    }
    fn load_u32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn store_u32(&self, off: u64, _v: u32) {
        self.refused(off)
    }
    fn load_u64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(off, &mut b);
        u64::from_le_bytes(b)
    }
    fn store_u64(&self, off: u64, _v: u64) {
        self.refused(off)
    }
    fn write_back(&self, _off: u64, _len: u64) {}
    fn invalidate(&self, _off: u64, _len: u64) {}
    fn store_fence(&self) {}
    fn full_fence(&self) {}
}

/// Inspect a file (read-only) at `now_ns`.
pub fn inspect_file(path: &Path, now_ns: u64) -> std::io::Result<Report> {
    let mem = FileMem::open(path)?;
    Ok(inspect(Shm::new(&mem, &NoTrace), now_ns))
}
