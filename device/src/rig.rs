//! A test rig for backends: one channel on a fresh transport, with the host
//! side played by hand (feature `std`).
//!
//! A real host engine only ever writes well-formed entries. To test
//! what a backend does with anything else — a junk SE, a wrong tid, a bad CRC, a
//! hostile ring pointer — the test has to write the shared memory itself. [`Rig`]
//! does the bookkeeping for that, in the spirit of the mock queue of rust-vmm's
//! `virtio-queue` (`MockSplitQueue`): it owns a coherent heap region
//! ([`HeapMem`]) formatted as a CBD v3 transport, knows where channel 0's control
//! page, rings and data area are, and offers one method per thing a host writes or
//! reads. The backend under test is started on the rig's memory and polled by the
//! test; nothing runs in the background.
//!
//! What it does *not* do: validate. Every writer takes whatever the test gives it
//! (raw bytes, any pointer value), because producing bad input is its purpose.
//! Readers return the decoded entry without checking its CRC
//! ([`Rig::ce_crc_ok`] says whether it verifies).
//!
//! ```
//! use device::backend::BackendConfig;
//! use device::layout::{Se, op, tflags};
//! use device::rig::Rig;
//!
//! let rig = Rig::new(tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC);
//! let mut scratch = Rig::scratch();
//! let mut backend = rig.start_backend(BackendConfig::default(), 1 << 20, &mut scratch, 1).unwrap();
//!
//! // A WRITE of 4 KiB at disk offset 8192, payload at data offset 0.
//! let payload = vec![0x5A; 4096];
//! rig.write_payload(0, &payload);
//! let se = Se { op: op::WRITE, req_tid: 0, offset: 8192, len: 4096, data_off: 0,
//!               data_len: 4096, data_crc: device::crc::crc32(&payload), ..Se::default() };
//! rig.write_se(0, &se, true);
//! rig.set_submr_head(rig.se_pos(1)); // the doorbell
//! backend.poll(2).unwrap();
//!
//! assert_eq!(rig.compr_head(), rig.ce_pos(1));
//! let ce = rig.read_ce(0);
//! assert_eq!((ce.req_tid, ce.result), (0, 0));
//! assert!(rig.ce_crc_ok(0));
//! ```

use crate::backend::{Backend, BackendConfig, BackendError};
use crate::channel::{ChannelGeom, copy_from_data, copy_to_data};
use crate::layout::{Ce, EntryLayout, MAX_CE_SIZE, MAX_SE_SIZE, Se, TransportInfo, chan, ctrl};
use crate::native::{HeapMem, VecMedia};
use crate::shm::{SharedMem, Shm};
use crate::trace::NoTrace;
use crate::transport::Transport;

/// A one-segment transport in a heap region with channel 0's geometry; see the
/// module documentation.
pub struct Rig {
    /// The shared region (read or write anything directly).
    pub mem: HeapMem,
    /// Channel 0: the segment a backend started on this fresh transport provisions
    /// for its first handler ([`Rig::start_backend`] checks it).
    pub g: ChannelGeom,
    flags: u16,
}

static NO_TRACE: NoTrace = NoTrace;

impl Rig {
    /// Format a region that holds exactly one channel segment with transport
    /// `flags` (the CRC flags choose the SE/CE formats).
    pub fn new(flags: u16) -> Self {
        Self::with_segments(flags, 1)
    }

    /// [`Rig::new`] on a region that holds `n` channel segments (a backend with up to
    /// `n` handlers, or several backends); `g` is still segment 0, [`Rig::geom`] any.
    pub fn with_segments(flags: u16, n: u32) -> Self {
        let mem = HeapMem::new(TransportInfo::region_for(n.max(1) as u64) as usize);
        let shm = Shm::new(&mem, &NO_TRACE);
        Transport::format(shm, flags, false, 1).expect("format a fresh region");
        let base = Transport::open(shm, false)
            .and_then(|t| t.channel_base(0))
            .expect("open the transport just formatted");
        let g = ChannelGeom::new(base, flags, false);
        Self { mem, g, flags }
    }

    /// The geometry of channel segment `seg_id`.
    pub fn geom(&self, seg_id: u32) -> ChannelGeom {
        let base = Transport::open(self.shm(), false)
            .and_then(|t| t.channel_base(seg_id))
            .expect("a segment of this transport");
        ChannelGeom::new(base, self.flags, false)
    }

    /// The transport flags the rig was formatted with.
    pub fn flags(&self) -> u16 {
        self.flags
    }
    /// The SE/CE formats of this transport.
    pub fn el(&self) -> EntryLayout {
        self.g.el
    }
    /// The region as the engines see it (no tracing).
    pub fn shm(&self) -> Shm<'_, HeapMem> {
        Shm::new(&self.mem, &NO_TRACE)
    }
    /// A scratch buffer of the size [`Backend::start`] needs.
    pub fn scratch() -> Vec<u8> {
        vec![0; chan::MAX_IO as usize]
    }

    /// Start a backend on the rig with a zeroed RAM disk of `disk_bytes`.
    /// `cfg.n_handlers` may be more than 1, but only channel 0 is played by the rig.
    pub fn start_backend<'a>(
        &'a self,
        cfg: BackendConfig<'a>,
        disk_bytes: usize,
        scratch: &'a mut [u8],
        now_ns: u64,
    ) -> Result<Backend<'a, HeapMem, VecMedia>, BackendError> {
        self.start_backend_on(cfg, VecMedia::new(disk_bytes), scratch, now_ns)
    }

    /// [`Rig::start_backend`] on the given media (e.g. [`VecMedia::volatile`]).
    pub fn start_backend_on<'a>(
        &'a self,
        cfg: BackendConfig<'a>,
        media: VecMedia,
        scratch: &'a mut [u8],
        now_ns: u64,
    ) -> Result<Backend<'a, HeapMem, VecMedia>, BackendError> {
        let b = Backend::start(self.shm(), cfg, media, scratch, now_ns)?;
        let first = b.channel_segments().next();
        let seg0 = Transport::open(self.shm(), false)?.channel_base(first.unwrap_or(0))?;
        assert_eq!(
            seg0, self.g.base,
            "the backend's first channel is not segment 0"
        );
        Ok(b)
    }

    /// Byte position of the `i`-th SE of the submission ring.
    pub fn se_pos(&self, i: u32) -> u32 {
        i * self.g.el.se_size
    }
    /// Byte position of the `i`-th CE of the completion ring.
    pub fn ce_pos(&self, i: u32) -> u32 {
        i * self.g.el.ce_size
    }

    /// Write raw bytes at SE position `pos` (at most one SE's worth is meaningful,
    /// but nothing stops a test from writing more).
    pub fn write_se_bytes(&self, pos: u32, bytes: &[u8]) {
        self.mem.write(self.g.se(pos), bytes);
    }
    /// Encode `se` at SE position `pos`; `seal` computes `se_crc` (if the format has
    /// one), otherwise the CRC field is written as given.
    pub fn write_se(&self, pos: u32, se: &Se, seal: bool) {
        let el = self.g.el;
        let mut b = [0u8; MAX_SE_SIZE];
        el.encode_se(se, &mut b);
        if seal {
            el.seal_se(&mut b);
        }
        self.write_se_bytes(pos, &b[..el.se_size as usize]);
    }
    /// Decode the SE at `pos` (e.g. to see the DONE flag), CRC not checked.
    pub fn read_se(&self, pos: u32) -> Se {
        let el = self.g.el;
        let mut b = [0u8; MAX_SE_SIZE];
        self.mem.read(self.g.se(pos), &mut b[..el.se_size as usize]);
        el.decode_se(&b).unwrap_or_default()
    }

    /// Copy a payload into the data area at `data_off` (wrapping at its end).
    pub fn write_payload(&self, data_off: u32, data: &[u8]) {
        copy_to_data(self.shm(), &self.g, data_off, data).expect("payload inside the region");
    }
    /// Copy a payload out of the data area.
    pub fn read_payload(&self, data_off: u32, buf: &mut [u8]) {
        copy_from_data(self.shm(), &self.g, data_off, buf).expect("payload inside the region");
    }

    /// Publish `submr_head` (store-release): the doorbell. Any value, legal or not.
    pub fn set_submr_head(&self, v: u32) {
        self.mem.store_u32(self.g.ctrl(ctrl::SUBMR_HEAD), v);
    }
    /// Publish `submr_tail` (the host's reclaim point).
    pub fn set_submr_tail(&self, v: u32) {
        self.mem.store_u32(self.g.ctrl(ctrl::SUBMR_TAIL), v);
    }
    /// Publish `compr_tail` (CEs consumed up to here).
    pub fn set_compr_tail(&self, v: u32) {
        self.mem.store_u32(self.g.ctrl(ctrl::COMPR_TAIL), v);
    }
    /// Overwrite the device's `compr_head` (only to simulate a corrupted page).
    pub fn set_compr_head(&self, v: u32) {
        self.mem.store_u32(self.g.ctrl(ctrl::COMPR_HEAD), v);
    }
    /// Zero all four ring pointers, as after a RESET.
    pub fn clear_pointers(&self) {
        for p in [
            ctrl::SUBMR_HEAD,
            ctrl::SUBMR_TAIL,
            ctrl::COMPR_HEAD,
            ctrl::COMPR_TAIL,
        ] {
            self.mem.store_u32(self.g.ctrl(p), 0);
        }
    }
    /// The device's published `compr_head` (load-acquire).
    pub fn compr_head(&self) -> u32 {
        self.mem.load_u32(self.g.ctrl(ctrl::COMPR_HEAD))
    }

    /// Decode the CE at byte position `pos`, CRC not checked.
    pub fn read_ce(&self, pos: u32) -> Ce {
        let el = self.g.el;
        let mut b = [0u8; MAX_CE_SIZE];
        self.mem.read(self.g.ce(pos), &mut b[..el.ce_size as usize]);
        el.decode_ce(&b).unwrap_or_default()
    }
    /// Does the CE at `pos` carry a valid entry CRC (always true without CHANNEL_CRC)?
    pub fn ce_crc_ok(&self, pos: u32) -> bool {
        let el = self.g.el;
        let mut b = [0u8; MAX_CE_SIZE];
        self.mem.read(self.g.ce(pos), &mut b[..el.ce_size as usize]);
        el.entry_crc_ok(&b, el.ce_size)
    }
}
