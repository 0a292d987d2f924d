//! The CBD v3 on-memory format, declared once by explicit offsets.
//!
//! Every structure is encoded/decoded little-endian from byte slices; nothing
//! here depends on Rust struct layout. Each offset table is followed by
//! compile-time checks (size, ordering, fits-in-slot), so a typo fails the build.
//! `docs/protocol.md` draws the same tables.
//!
//! Decoders take untrusted bytes: they return `None` when the slice is too short
//! and otherwise accept any bit pattern (validation of values is the caller's job).

/// Page / record-copy size.
pub const PAGE: usize = 4096;
/// One 64-byte cache line: the unit of write-back in non-coherent mode.
pub const LINE: usize = 64;
const MIB: u64 = 1024 * 1024;

// --------------------------------------------------------------------------------------
// little-endian helpers (callers guarantee the bounds; all uses are on checked slices)

#[inline]
pub(crate) fn get_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
#[inline]
pub(crate) fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
#[inline]
pub(crate) fn get_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
#[inline]
pub(crate) fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

// --------------------------------------------------------------------------------------
// Transport info (offset 0 of the transport, 80 bytes, single copy, no CRC)

pub mod tinfo {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const FLAGS: usize = 10;
    // 12..16 padding
    pub const HOST_AREA_OFF: usize = 16;
    pub const HOST_INFO_SIZE: usize = 24;
    pub const HOST_NUM: usize = 28;
    pub const BACKEND_AREA_OFF: usize = 32;
    pub const BACKEND_INFO_SIZE: usize = 40;
    pub const BACKEND_NUM: usize = 44;
    pub const BLKDEV_AREA_OFF: usize = 48;
    pub const BLKDEV_INFO_SIZE: usize = 56;
    pub const BLKDEV_NUM: usize = 60;
    pub const SEGMENT_AREA_OFF: usize = 64;
    pub const SEGMENT_SIZE: usize = 72;
    pub const SEGMENT_NUM: usize = 76;
    pub const SIZE: usize = 80;
}
const _: () = {
    use tinfo::*;
    assert!(VERSION == MAGIC + 8 && FLAGS == VERSION + 2 && HOST_AREA_OFF == 16);
    assert!(HOST_INFO_SIZE == HOST_AREA_OFF + 8 && HOST_NUM == HOST_INFO_SIZE + 4);
    assert!(BACKEND_AREA_OFF == HOST_NUM + 4 && BACKEND_NUM == BACKEND_INFO_SIZE + 4);
    assert!(BLKDEV_AREA_OFF == BACKEND_NUM + 4 && BLKDEV_NUM == BLKDEV_INFO_SIZE + 4);
    assert!(SEGMENT_AREA_OFF == BLKDEV_NUM + 4 && SEGMENT_NUM + 4 == SIZE && SIZE <= PAGE);
};

pub const TRANSPORT_MAGIC: u64 = 0x65B0_5EFA_96C5_96EF;
pub const TRANSPORT_VERSION: u16 = 1;
/// Transport flags (`tinfo::FLAGS`).
pub mod tflags {
    pub const BIGENDIAN: u16 = 1 << 0;
    pub const CHANNEL_CRC: u16 = 1 << 1;
    pub const CHANNEL_DATA_CRC: u16 = 1 << 2;
    pub const CACHE_DATA_CRC: u16 = 1 << 3;
    pub const MULTIHOST: u16 = 1 << 4;
    pub const KNOWN: u16 = BIGENDIAN | CHANNEL_CRC | CHANNEL_DATA_CRC | CACHE_DATA_CRC | MULTIHOST;
}
/// Transport info is followed by this much reserved space; the host area starts here.
pub const HOST_AREA_OFF: u64 = 8192;
/// One object (host/backend/blkdev) occupies 2 copies of one page.
pub const OBJ_SLOT: u64 = 2 * PAGE as u64;
pub const SEGMENT_SIZE: u64 = 16 * MIB;
pub const MAX_HOSTS: u32 = 16;
/// Heartbeat period and liveness timeout (CLOCK_REALTIME nanoseconds).
pub const HB_INTERVAL_NS: u64 = 5_000_000_000;
pub const HB_TIMEOUT_NS: u64 = 30_000_000_000;

/// Decoded transport info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportInfo {
    pub magic: u64,
    pub version: u16,
    pub flags: u16,
    pub host_area_off: u64,
    pub host_info_size: u32,
    pub host_num: u32,
    pub backend_area_off: u64,
    pub backend_info_size: u32,
    pub backend_num: u32,
    pub blkdev_area_off: u64,
    pub blkdev_info_size: u32,
    pub blkdev_num: u32,
    pub segment_area_off: u64,
    pub segment_size: u32,
    pub segment_num: u32,
}

impl TransportInfo {
    /// Bytes each segment costs in v3's format: its 16 MiB plus one host, backend
    /// and blkdev slot.
    pub const PER_SEGMENT: u64 = 3 * OBJ_SLOT + SEGMENT_SIZE;

    /// v3's format: one host, backend and blkdev slot per segment.
    pub fn nr_segs(dev_size: u64) -> u64 {
        dev_size.saturating_sub(HOST_AREA_OFF) / Self::PER_SEGMENT
    }

    /// The smallest region that formats to `segments` segments (the inverse of
    /// [`Self::nr_segs`]).
    pub const fn region_for(segments: u64) -> u64 {
        HOST_AREA_OFF + segments * Self::PER_SEGMENT
    }

    /// The transport info that v3's `format` writes for a region of `dev_size` bytes.
    pub fn for_size(dev_size: u64, flags: u16) -> Option<Self> {
        let nr = Self::nr_segs(dev_size);
        if nr == 0 || nr > u32::MAX as u64 {
            return None;
        }
        let host_num = if flags & tflags::MULTIHOST != 0 {
            nr.min(MAX_HOSTS as u64)
        } else {
            1
        };
        let backend_area_off = HOST_AREA_OFF + OBJ_SLOT * host_num;
        let blkdev_area_off = backend_area_off + OBJ_SLOT * nr;
        let segment_area_off = blkdev_area_off + OBJ_SLOT * nr;
        Some(Self {
            magic: TRANSPORT_MAGIC,
            version: TRANSPORT_VERSION,
            flags,
            host_area_off: HOST_AREA_OFF,
            host_info_size: PAGE as u32,
            host_num: host_num as u32,
            backend_area_off,
            backend_info_size: PAGE as u32,
            backend_num: nr as u32,
            blkdev_area_off,
            blkdev_info_size: PAGE as u32,
            blkdev_num: nr as u32,
            segment_area_off,
            segment_size: SEGMENT_SIZE as u32,
            segment_num: nr as u32,
        })
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        use tinfo::*;
        if b.len() < SIZE {
            return None;
        }
        Some(Self {
            magic: get_u64(b, MAGIC),
            version: get_u16(b, VERSION),
            flags: get_u16(b, FLAGS),
            host_area_off: get_u64(b, HOST_AREA_OFF),
            host_info_size: get_u32(b, HOST_INFO_SIZE),
            host_num: get_u32(b, HOST_NUM),
            backend_area_off: get_u64(b, BACKEND_AREA_OFF),
            backend_info_size: get_u32(b, BACKEND_INFO_SIZE),
            backend_num: get_u32(b, BACKEND_NUM),
            blkdev_area_off: get_u64(b, BLKDEV_AREA_OFF),
            blkdev_info_size: get_u32(b, BLKDEV_INFO_SIZE),
            blkdev_num: get_u32(b, BLKDEV_NUM),
            segment_area_off: get_u64(b, SEGMENT_AREA_OFF),
            segment_size: get_u32(b, SEGMENT_SIZE),
            segment_num: get_u32(b, SEGMENT_NUM),
        })
    }

    /// Encode into the first [`tinfo::SIZE`] bytes of `b` (padding zeroed).
    pub fn encode(&self, b: &mut [u8]) {
        use tinfo::*;
        b[..SIZE].fill(0);
        put_u64(b, MAGIC, self.magic);
        put_u16(b, VERSION, self.version);
        put_u16(b, FLAGS, self.flags);
        put_u64(b, HOST_AREA_OFF, self.host_area_off);
        put_u32(b, HOST_INFO_SIZE, self.host_info_size);
        put_u32(b, HOST_NUM, self.host_num);
        put_u64(b, BACKEND_AREA_OFF, self.backend_area_off);
        put_u32(b, BACKEND_INFO_SIZE, self.backend_info_size);
        put_u32(b, BACKEND_NUM, self.backend_num);
        put_u64(b, BLKDEV_AREA_OFF, self.blkdev_area_off);
        put_u32(b, BLKDEV_INFO_SIZE, self.blkdev_info_size);
        put_u32(b, BLKDEV_NUM, self.blkdev_num);
        put_u64(b, SEGMENT_AREA_OFF, self.segment_area_off);
        put_u32(b, SEGMENT_SIZE, self.segment_size);
        put_u32(b, SEGMENT_NUM, self.segment_num);
    }

    /// Structural validation against a region of `region_len` bytes. Everything the
    /// engines later index with is checked here, once, with overflow-safe arithmetic.
    pub fn validate(&self, region_len: u64) -> Result<(), &'static str> {
        if self.magic != TRANSPORT_MAGIC {
            return Err("bad magic");
        }
        if self.version != TRANSPORT_VERSION {
            return Err("unsupported version");
        }
        if self.flags & tflags::BIGENDIAN != 0 {
            return Err("big-endian transport");
        }
        if self.flags & !tflags::KNOWN != 0 {
            return Err("unknown transport flags");
        }
        if self.host_info_size as usize != PAGE
            || self.backend_info_size as usize != PAGE
            || self.blkdev_info_size as usize != PAGE
            || self.segment_size as u64 != SEGMENT_SIZE
        {
            return Err("unsupported record or segment size");
        }
        if self.host_num == 0 || self.segment_num == 0 {
            return Err("empty areas");
        }
        let area =
            |off: u64, n: u32| -> Option<u64> { off.checked_add(OBJ_SLOT.checked_mul(n as u64)?) };
        let h_end = area(self.host_area_off, self.host_num).ok_or("overflow")?;
        let b_end = area(self.backend_area_off, self.backend_num).ok_or("overflow")?;
        let d_end = area(self.blkdev_area_off, self.blkdev_num).ok_or("overflow")?;
        let s_end = SEGMENT_SIZE
            .checked_mul(self.segment_num as u64)
            .and_then(|x| x.checked_add(self.segment_area_off))
            .ok_or("overflow")?;
        if self.host_area_off < tinfo::SIZE as u64
            || self.backend_area_off < h_end
            || self.blkdev_area_off < b_end
            || self.segment_area_off < d_end
            || s_end > region_len
        {
            return Err("areas overlap or exceed the region");
        }
        if !self.host_area_off.is_multiple_of(PAGE as u64)
            || !self.backend_area_off.is_multiple_of(PAGE as u64)
            || !self.blkdev_area_off.is_multiple_of(PAGE as u64)
            || !self.segment_area_off.is_multiple_of(PAGE as u64)
        {
            return Err("areas not page aligned");
        }
        Ok(())
    }

    pub fn host_slot(&self, id: u32) -> u64 {
        self.host_area_off + OBJ_SLOT * id as u64
    }
    pub fn backend_slot(&self, id: u32) -> u64 {
        self.backend_area_off + OBJ_SLOT * id as u64
    }
    pub fn blkdev_slot(&self, id: u32) -> u64 {
        self.blkdev_area_off + OBJ_SLOT * id as u64
    }
    pub fn segment_off(&self, id: u32) -> u64 {
        self.segment_area_off + SEGMENT_SIZE * id as u64
    }
    /// SE/CE wire format selected by the CRC flags.
    pub fn entry_layout(&self) -> EntryLayout {
        EntryLayout::from_flags(self.flags)
    }
}

// --------------------------------------------------------------------------------------
// Meta header (first 8 bytes of every two-copy record)

pub mod meta {
    pub const CRC: usize = 0;
    pub const SEQ: usize = 4;
    pub const VERSION: usize = 5;
    pub const SIZE: usize = 8;
}
const _: () = assert!(meta::SEQ == meta::CRC + 4 && meta::VERSION == 5 && meta::SIZE == 8);

/// Object states shared by host/backend/blkdev/segment records.
pub const STATE_NONE: u8 = 0;
pub const STATE_RUNNING: u8 = 1;
pub const STATE_STOPPING: u8 = 2;

pub const SEG_TYPE_NONE: u8 = 0;
pub const SEG_TYPE_CHANNEL: u8 = 1;
pub const SEG_TYPE_CACHE: u8 = 2;

/// Extension area inside the padding of our own 4 KiB record copies (backend and blkdev).
/// A plain CBD v3 reader never looks past its struct, and the slot CRC covers it.
pub mod ext {
    pub const OFF: usize = 1024;
    pub const MAGIC: usize = OFF; // u32 "CBDX"
    pub const VERSION: usize = OFF + 4; // u16
    pub const FEATURES: usize = OFF + 8; // u64
    pub const END: usize = OFF + 16;
    pub const MAGIC_VALUE: u32 = u32::from_le_bytes(*b"CBDX");
}
/// Feature bits (backend record: offered; blkdev record: accepted).
pub mod features {
    /// Non-coherent channel mode (extensions §1): own lines, write-back/invalidate, CRCs.
    pub const NONCOHERENT: u64 = 1 << 0;
    /// Durability tokens (issue 6, `docs/durability.md`): per-channel `durable_tid`
    /// watermark line, CE flag DURABLE, SE intent bits, host power window.
    pub const DURABLE_TOKENS: u64 = 1 << 1;
    /// DISCARD (op 3) and WRITE_ZEROES (op 4) accepted by the backend.
    pub const DISCARD_WZ: u64 = 1 << 2;
}

/// A record kept in the two-copy/seq/CRC scheme.
pub trait Record: Sized + Clone {
    /// Byte size of one copy (CRC'd whole): 4096 for infos, 16 for mgmt records.
    const COPY_SIZE: usize;
    /// `sizeof(struct)` in v3 (header included).
    const STRUCT_SIZE: usize;
    /// Decode the body (bytes after the 8-byte header) from a full copy.
    fn decode_body(copy: &[u8]) -> Self;
    /// Encode the body into a zeroed copy buffer (header is filled by the codec).
    fn encode_body(&self, copy: &mut [u8]);
}

fn str_field<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[o..o + N]);
    a
}

/// Host info (v3 struct: 56 bytes).
pub mod host_rec {
    pub const STATE: usize = 8;
    pub const ALIVE_TS: usize = 16;
    pub const HOSTNAME: usize = 24;
    pub const HOSTNAME_LEN: usize = 32;
    pub const SIZE: usize = 56;
}
const _: () = assert!(
    host_rec::HOSTNAME + host_rec::HOSTNAME_LEN == host_rec::SIZE && host_rec::SIZE <= PAGE
);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    pub state: u8,
    pub alive_ts: u64,
    pub hostname: [u8; 32],
}
impl Record for HostInfo {
    const COPY_SIZE: usize = PAGE;
    const STRUCT_SIZE: usize = host_rec::SIZE;
    fn decode_body(b: &[u8]) -> Self {
        use host_rec::*;
        Self {
            state: b[STATE],
            alive_ts: get_u64(b, ALIVE_TS),
            hostname: str_field(b, HOSTNAME),
        }
    }
    fn encode_body(&self, b: &mut [u8]) {
        use host_rec::*;
        b[STATE] = self.state;
        put_u64(b, ALIVE_TS, self.alive_ts);
        b[HOSTNAME..HOSTNAME + HOSTNAME_LEN].copy_from_slice(&self.hostname);
    }
}

/// Backend info (v3 struct: 696 bytes) plus our extension area.
pub mod backend_rec {
    pub const STATE: usize = 8;
    pub const HOST_ID: usize = 12;
    pub const ALIVE_TS: usize = 16;
    pub const DEV_SIZE: usize = 24;
    pub const PATH: usize = 32;
    pub const PATH_LEN: usize = 128;
    pub const N_HANDLERS: usize = 160;
    pub const HANDLER_CHANNELS: usize = 164;
    pub const MAX_HANDLERS: usize = 128;
    pub const CACHE_SEG_ID: usize = 676;
    pub const CACHE_N_SEGS: usize = 680;
    pub const CACHE_GC_PERCENT: usize = 684;
    pub const CACHE_RES: usize = 686;
    pub const CACHE_RES2: usize = 688;
    pub const SIZE: usize = 696;
}
const _: () = {
    use backend_rec::*;
    assert!(PATH + PATH_LEN == N_HANDLERS && HANDLER_CHANNELS == N_HANDLERS + 4);
    assert!(HANDLER_CHANNELS + 4 * MAX_HANDLERS == CACHE_SEG_ID);
    assert!(CACHE_RES2 + 4 <= SIZE && SIZE <= ext::OFF && ext::END <= PAGE);
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    pub state: u8,
    pub host_id: u32,
    pub alive_ts: u64,
    /// In 512-byte sectors.
    pub dev_size: u64,
    pub path: [u8; 128],
    pub n_handlers: u32,
    pub handler_channels: [u32; 128],
    pub cache_seg_id: u32,
    pub cache_n_segs: u32,
    pub cache_gc_percent: u16,
    /// Our extension (0 for a plain v3 backend).
    pub features: u64,
}
impl Default for BackendInfo {
    fn default() -> Self {
        Self {
            state: 0,
            host_id: 0,
            alive_ts: 0,
            dev_size: 0,
            path: [0; 128],
            n_handlers: 0,
            handler_channels: [0; 128],
            cache_seg_id: 0,
            cache_n_segs: 0,
            cache_gc_percent: 0,
            features: 0,
        }
    }
}
fn decode_ext(b: &[u8]) -> u64 {
    if get_u32(b, ext::MAGIC) == ext::MAGIC_VALUE {
        get_u64(b, ext::FEATURES)
    } else {
        0
    }
}
fn encode_ext(b: &mut [u8], features: u64) {
    if features != 0 {
        put_u32(b, ext::MAGIC, ext::MAGIC_VALUE);
        put_u16(b, ext::VERSION, 1);
        put_u64(b, ext::FEATURES, features);
    }
}
impl Record for BackendInfo {
    const COPY_SIZE: usize = PAGE;
    const STRUCT_SIZE: usize = backend_rec::SIZE;
    fn decode_body(b: &[u8]) -> Self {
        use backend_rec::*;
        let mut hc = [0u32; 128];
        for (i, h) in hc.iter_mut().enumerate() {
            *h = get_u32(b, HANDLER_CHANNELS + 4 * i);
        }
        Self {
            state: b[STATE],
            host_id: get_u32(b, HOST_ID),
            alive_ts: get_u64(b, ALIVE_TS),
            dev_size: get_u64(b, DEV_SIZE),
            path: str_field(b, PATH),
            n_handlers: get_u32(b, N_HANDLERS),
            handler_channels: hc,
            cache_seg_id: get_u32(b, CACHE_SEG_ID),
            cache_n_segs: get_u32(b, CACHE_N_SEGS),
            cache_gc_percent: get_u16(b, CACHE_GC_PERCENT),
            features: decode_ext(b),
        }
    }
    fn encode_body(&self, b: &mut [u8]) {
        use backend_rec::*;
        b[STATE] = self.state;
        put_u32(b, HOST_ID, self.host_id);
        put_u64(b, ALIVE_TS, self.alive_ts);
        put_u64(b, DEV_SIZE, self.dev_size);
        b[PATH..PATH + PATH_LEN].copy_from_slice(&self.path);
        put_u32(b, N_HANDLERS, self.n_handlers);
        for (i, h) in self.handler_channels.iter().enumerate() {
            put_u32(b, HANDLER_CHANNELS + 4 * i, *h);
        }
        put_u32(b, CACHE_SEG_ID, self.cache_seg_id);
        put_u32(b, CACHE_N_SEGS, self.cache_n_segs);
        put_u16(b, CACHE_GC_PERCENT, self.cache_gc_percent);
        encode_ext(b, self.features);
    }
}

/// Blkdev info (v3 struct: 40 bytes) plus our extension area.
pub mod blkdev_rec {
    pub const STATE: usize = 8;
    pub const ALIVE_TS: usize = 16;
    pub const BACKEND_ID: usize = 24;
    pub const HOST_ID: usize = 28;
    pub const MAPPED_ID: usize = 32;
    pub const SIZE: usize = 40;
}
const _: () =
    assert!(blkdev_rec::MAPPED_ID + 4 <= blkdev_rec::SIZE && blkdev_rec::SIZE <= ext::OFF);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlkdevInfo {
    pub state: u8,
    pub alive_ts: u64,
    pub backend_id: u32,
    pub host_id: u32,
    pub mapped_id: u32,
    /// Features accepted by our host (extension area; 0 for plain v3).
    pub features: u64,
}
impl Record for BlkdevInfo {
    const COPY_SIZE: usize = PAGE;
    const STRUCT_SIZE: usize = blkdev_rec::SIZE;
    fn decode_body(b: &[u8]) -> Self {
        use blkdev_rec::*;
        Self {
            state: b[STATE],
            alive_ts: get_u64(b, ALIVE_TS),
            backend_id: get_u32(b, BACKEND_ID),
            host_id: get_u32(b, HOST_ID),
            mapped_id: get_u32(b, MAPPED_ID),
            features: decode_ext(b),
        }
    }
    fn encode_body(&self, b: &mut [u8]) {
        use blkdev_rec::*;
        b[STATE] = self.state;
        put_u64(b, ALIVE_TS, self.alive_ts);
        put_u32(b, BACKEND_ID, self.backend_id);
        put_u32(b, HOST_ID, self.host_id);
        put_u32(b, MAPPED_ID, self.mapped_id);
        encode_ext(b, self.features);
    }
}

/// Segment info (20 bytes; copies at segment offset 0 and 4096).
pub mod segment_rec {
    pub const TYPE: usize = 8;
    pub const STATE: usize = 9;
    pub const FLAGS: usize = 10;
    pub const NEXT_SEG: usize = 12;
    pub const BACKEND_ID: usize = 16;
    pub const SIZE: usize = 20;
}
const _: () = assert!(segment_rec::BACKEND_ID + 4 == segment_rec::SIZE);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentInfo {
    pub seg_type: u8,
    pub state: u8,
    pub flags: u16,
    pub next_seg: u32,
    pub backend_id: u32,
}
impl Record for SegmentInfo {
    const COPY_SIZE: usize = PAGE;
    const STRUCT_SIZE: usize = segment_rec::SIZE;
    fn decode_body(b: &[u8]) -> Self {
        use segment_rec::*;
        Self {
            seg_type: b[TYPE],
            state: b[STATE],
            flags: get_u16(b, FLAGS),
            next_seg: get_u32(b, NEXT_SEG),
            backend_id: get_u32(b, BACKEND_ID),
        }
    }
    fn encode_body(&self, b: &mut [u8]) {
        use segment_rec::*;
        b[TYPE] = self.seg_type;
        b[STATE] = self.state;
        put_u16(b, FLAGS, self.flags);
        put_u32(b, NEXT_SEG, self.next_seg);
        put_u32(b, BACKEND_ID, self.backend_id);
    }
}

/// Management command / return record (16 bytes per copy, two adjacent copies).
pub mod mgmt_rec {
    pub const CMD_SEQ: usize = 8;
    pub const CMD_OP: usize = 9; // cmd_ret for the return record
    pub const SIZE: usize = 16;
}
pub const MGMT_OP_NONE: u8 = 0;
pub const MGMT_OP_RESET: u8 = 1;
pub const MGMT_RET_OK: u8 = 0;
pub const MGMT_RET_EIO: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MgmtCmd {
    pub cmd_seq: u8,
    pub cmd_op: u8,
}
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MgmtRet {
    pub cmd_seq: u8,
    pub cmd_ret: u8,
}
impl Record for MgmtCmd {
    const COPY_SIZE: usize = mgmt_rec::SIZE;
    const STRUCT_SIZE: usize = mgmt_rec::SIZE;
    fn decode_body(b: &[u8]) -> Self {
        Self {
            cmd_seq: b[mgmt_rec::CMD_SEQ],
            cmd_op: b[mgmt_rec::CMD_OP],
        }
    }
    fn encode_body(&self, b: &mut [u8]) {
        b[mgmt_rec::CMD_SEQ] = self.cmd_seq;
        b[mgmt_rec::CMD_OP] = self.cmd_op;
    }
}
impl Record for MgmtRet {
    const COPY_SIZE: usize = mgmt_rec::SIZE;
    const STRUCT_SIZE: usize = mgmt_rec::SIZE;
    fn decode_body(b: &[u8]) -> Self {
        Self {
            cmd_seq: b[mgmt_rec::CMD_SEQ],
            cmd_ret: b[mgmt_rec::CMD_OP],
        }
    }
    fn encode_body(&self, b: &mut [u8]) {
        b[mgmt_rec::CMD_SEQ] = self.cmd_seq;
        b[mgmt_rec::CMD_OP] = self.cmd_ret;
    }
}

// --------------------------------------------------------------------------------------
// Channel segment

/// Offsets inside a channel segment.
pub mod chan {
    pub const SEG_INFO0: u64 = 0;
    pub const SEG_INFO1: u64 = 0x1000;
    pub const CTRL_OFF: u64 = 0x2000;
    pub const COMPR_OFF: u64 = 0x3000;
    pub const COMPR_ENTRIES: u64 = 1024;
    pub const DATA_OFF: u64 = 4 * 1024 * 1024;
    pub const DATA_SIZE: u64 = 12 * 1024 * 1024;
    /// Maximum I/O size a host may submit (256 × 4 KiB).
    pub const MAX_IO: u32 = 1024 * 1024;
    pub const DATA_ALIGN: u32 = 4096;
}
const _: () = {
    assert!(chan::SEG_INFO1 == chan::SEG_INFO0 + PAGE as u64);
    assert!(chan::COMPR_OFF == chan::CTRL_OFF + PAGE as u64);
    assert!(chan::DATA_OFF + chan::DATA_SIZE == SEGMENT_SIZE);
};

/// Channel control page (offsets relative to `CTRL_OFF`).
pub mod ctrl {
    pub const FLAGS: u64 = 0;
    pub const MGMT_CMD: u64 = 8;
    pub const MGMT_RET: u64 = 40;
    pub const SUBMR_HEAD: u64 = 72;
    pub const SUBMR_TAIL: u64 = 76;
    pub const COMPR_HEAD: u64 = 80;
    pub const COMPR_TAIL: u64 = 84;
    pub const V3_END: u64 = 88;
    pub const FLAG_POLLING: u64 = 1;

    /// Non-coherent mode: host-owned line (only the host ever stores here).
    pub const NC_HOST_LINE: u64 = 0x100;
    /// Non-coherent mode: device-owned line (only the device ever stores here).
    pub const NC_DEV_LINE: u64 = 0x140;
    /// Durability tokens, both modes: device-owned line ([`super::dur_dev`]).
    pub const DUR_DEV_LINE: u64 = 0x180;
    /// Durability tokens, both modes: host-owned line ([`super::dur_host`]).
    pub const DUR_HOST_LINE: u64 = 0x1C0;
}
const _: () = {
    use ctrl::*;
    assert!(MGMT_RET == MGMT_CMD + 2 * mgmt_rec::SIZE as u64);
    assert!(SUBMR_HEAD == MGMT_RET + 2 * mgmt_rec::SIZE as u64);
    assert!(COMPR_TAIL + 4 == V3_END);
    assert!(NC_HOST_LINE >= V3_END && NC_HOST_LINE.is_multiple_of(LINE as u64));
    assert!(NC_DEV_LINE >= NC_HOST_LINE + LINE as u64 && NC_DEV_LINE.is_multiple_of(LINE as u64));
    assert!(NC_DEV_LINE + (LINE as u64) <= PAGE as u64);
    assert!(DUR_DEV_LINE >= NC_DEV_LINE + LINE as u64 && DUR_DEV_LINE.is_multiple_of(LINE as u64));
    assert!(DUR_HOST_LINE >= DUR_DEV_LINE + LINE as u64);
    assert!(
        DUR_HOST_LINE.is_multiple_of(LINE as u64) && DUR_HOST_LINE + LINE as u64 <= PAGE as u64
    );
};

/// Device-owned durability line at `ctrl::DUR_DEV_LINE` (CRC over bytes 4..SIZE).
/// Written only when the blkdev accepted `features::DURABLE_TOKENS`.
pub mod dur_dev {
    pub const CRC: usize = 0;
    /// Backend incarnation: bumped at every backend start / re-attach. A host that
    /// sees it change knows staged (completed, unconfirmed) writes may be lost.
    pub const GEN: usize = 4;
    /// Watermark, exclusive: every WRITE/WRITE_ZEROES/DISCARD of this channel with
    /// `req_tid < durable_tid` is on non-volatile media. 0 = nothing confirmed yet.
    pub const DURABLE_TID: usize = 8;
    pub const SIZE: usize = 16;
}
/// Host-owned durability line at `ctrl::DUR_HOST_LINE` (CRC over bytes 4..SIZE).
pub mod dur_host {
    pub const CRC: usize = 0;
    /// Reserved (0).
    pub const RSVD: usize = 4;
    /// Microseconds the host guarantees power after a completion (0 = none).
    pub const POWER_WINDOW_US: usize = 8;
    pub const SIZE: usize = 16;
}
const _: () = {
    assert!(dur_dev::GEN == dur_dev::CRC + 4 && dur_dev::DURABLE_TID == 8);
    assert!(dur_dev::DURABLE_TID + 8 == dur_dev::SIZE && dur_dev::SIZE <= LINE);
    assert!(dur_host::POWER_WINDOW_US + 8 == dur_host::SIZE && dur_host::SIZE <= LINE);
};

/// Host-owned control line of the non-coherent mode (CRC over bytes 4..64).
pub mod nc_host {
    pub const CRC: usize = 0;
    pub const EPOCH: usize = 4;
    pub const SUBMR_HEAD: usize = 8;
    pub const SUBMR_TAIL: usize = 12;
    pub const COMPR_TAIL: usize = 16;
    /// First req_tid of this epoch (host tids are monotonic across resets).
    pub const BASE_TID: usize = 24;
    /// req_tid of the SE at `submr_tail` (what a re-attaching device expects first).
    pub const TAIL_TID: usize = 32;
    /// Features this host accepted for the channel (u32, e.g. DURABLE_TOKENS); it
    /// travels with the epoch bump because nothing orders the blkdev record before it.
    /// (Was reserved for the power window, which lives in `ctrl::DUR_HOST_LINE`.)
    pub const FEATURES: usize = 40;
}
/// Device-owned control line of the non-coherent mode (CRC over bytes 4..64).
pub mod nc_dev {
    pub const CRC: usize = 0;
    pub const ACK_EPOCH: usize = 4;
    pub const COMPR_HEAD: usize = 8;
    /// Reserved (unused: the watermark lives in `ctrl::DUR_DEV_LINE` in both modes).
    pub const RESERVED_DURABLE_TID: usize = 16;
}
const _: () = assert!(nc_host::FEATURES + 4 <= 48 && nc_dev::RESERVED_DURABLE_TID + 8 <= LINE);

/// SE/CE opcodes. 0..=2 are CBD v3; 3 and 4 are our extension.
pub mod op {
    pub const WRITE: u32 = 0;
    pub const READ: u32 = 1;
    pub const FLUSH: u32 = 2;
    pub const DISCARD: u32 = 3;
    pub const WRITE_ZEROES: u32 = 4;
}
/// SE flag: set by the host once it consumed the completion.
pub const SE_FLAG_DONE: u32 = 1;
/// SE intent bits (durability tokens; ignored unless DURABLE_TOKENS was accepted).
/// Neither bit = STANDARD (what a plain v3 host sends).
pub const SE_FLAG_EPHEMERAL: u32 = 1 << 1;
/// CRITICAL (= FUA): complete only once durable.
pub const SE_FLAG_CRITICAL: u32 = 1 << 2;
/// CE flag: the request was durable when it completed (CRITICAL writes, FLUSH).
pub const CE_FLAG_DURABLE: u32 = 1;
const _: () = assert!(
    SE_FLAG_DONE & (SE_FLAG_EPHEMERAL | SE_FLAG_CRITICAL) == 0
        && SE_FLAG_EPHEMERAL & SE_FLAG_CRITICAL == 0
);

/// Geometry of SE and CE for one set of transport CRC flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLayout {
    pub se_crc: bool,
    pub data_crc: bool,
    pub se_size: u32,
    pub ce_size: u32,
    /// Offset of the DONE-bearing `flags` field inside an SE.
    pub se_flags_off: u32,
}

impl EntryLayout {
    pub const fn from_flags(flags: u16) -> Self {
        let se_crc = flags & tflags::CHANNEL_CRC != 0;
        let data_crc = flags & tflags::CHANNEL_DATA_CRC != 0;
        let any = se_crc || data_crc;
        Self {
            se_crc,
            data_crc,
            se_size: if any { 48 } else { 40 },
            ce_size: if any { 24 } else { 16 },
            se_flags_off: if !any {
                4
            } else if se_crc && data_crc {
                12
            } else {
                8
            },
        }
    }
    fn any(&self) -> bool {
        self.se_crc || self.data_crc
    }
    pub const fn compr_size(&self) -> u64 {
        chan::COMPR_ENTRIES * self.ce_size as u64
    }
    pub const fn submr_off(&self) -> u64 {
        chan::COMPR_OFF + self.compr_size()
    }
    pub const fn submr_size(&self) -> u64 {
        let room = chan::DATA_OFF - self.submr_off();
        room / self.se_size as u64 * self.se_size as u64
    }
    /// (op, flags, req_tid, offset, len, data_off, data_len, se_crc?, data_crc?) offsets.
    fn se_offsets(&self) -> [usize; 7] {
        if !self.any() {
            [0, 4, 8, 16, 24, 28, 32]
        } else {
            [
                self.se_flags_off as usize - 4,
                self.se_flags_off as usize,
                16,
                24,
                32,
                36,
                40,
            ]
        }
    }
    fn crc_offsets(&self) -> (Option<usize>, Option<usize>) {
        match (self.se_crc, self.data_crc) {
            (true, true) => (Some(0), Some(4)),
            (true, false) => (Some(0), None),
            (false, true) => (None, Some(0)),
            (false, false) => (None, None),
        }
    }
    /// (req_tid, result, flags) offsets in a CE.
    fn ce_offsets(&self) -> [usize; 3] {
        if !self.any() { [0, 8, 12] } else { [8, 16, 20] }
    }

    pub fn decode_se(&self, b: &[u8]) -> Option<Se> {
        if b.len() < self.se_size as usize {
            return None;
        }
        let [o_op, o_fl, o_tid, o_off, o_len, o_doff, o_dlen] = self.se_offsets();
        let (c, d) = self.crc_offsets();
        Some(Se {
            se_crc: c.map_or(0, |o| get_u32(b, o)),
            data_crc: d.map_or(0, |o| get_u32(b, o)),
            op: get_u32(b, o_op),
            flags: get_u32(b, o_fl),
            req_tid: get_u64(b, o_tid),
            offset: get_u64(b, o_off),
            len: get_u32(b, o_len),
            data_off: get_u32(b, o_doff),
            data_len: get_u32(b, o_dlen),
        })
    }

    /// Encode into `b[..se_size]` (zeroing padding). CRC fields are written as given;
    /// use [`EntryLayout::seal_se`] to compute `se_crc`.
    pub fn encode_se(&self, se: &Se, b: &mut [u8]) {
        let b = &mut b[..self.se_size as usize];
        b.fill(0);
        let [o_op, o_fl, o_tid, o_off, o_len, o_doff, o_dlen] = self.se_offsets();
        let (c, d) = self.crc_offsets();
        if let Some(o) = c {
            put_u32(b, o, se.se_crc);
        }
        if let Some(o) = d {
            put_u32(b, o, se.data_crc);
        }
        put_u32(b, o_op, se.op);
        put_u32(b, o_fl, se.flags);
        put_u64(b, o_tid, se.req_tid);
        put_u64(b, o_off, se.offset);
        put_u32(b, o_len, se.len);
        put_u32(b, o_doff, se.data_off);
        put_u32(b, o_dlen, se.data_len);
    }

    /// Compute and store the entry CRC (if this layout has one) over bytes 4..size.
    pub fn seal(&self, b: &mut [u8], size: u32) {
        if self.se_crc {
            let c = crate::crc::crc32(&b[4..size as usize]);
            put_u32(b, 0, c);
        }
    }
    pub fn seal_se(&self, b: &mut [u8]) {
        self.seal(b, self.se_size)
    }
    pub fn seal_ce(&self, b: &mut [u8]) {
        self.seal(b, self.ce_size)
    }
    /// True if the entry CRC verifies (or the layout has none).
    pub fn entry_crc_ok(&self, b: &[u8], size: u32) -> bool {
        !self.se_crc
            || (b.len() >= size as usize
                && get_u32(b, 0) == crate::crc::crc32(&b[4..size as usize]))
    }

    pub fn decode_ce(&self, b: &[u8]) -> Option<Ce> {
        if b.len() < self.ce_size as usize {
            return None;
        }
        let [o_tid, o_res, o_fl] = self.ce_offsets();
        let (c, d) = self.crc_offsets();
        Some(Ce {
            ce_crc: c.map_or(0, |o| get_u32(b, o)),
            data_crc: d.map_or(0, |o| get_u32(b, o)),
            req_tid: get_u64(b, o_tid),
            result: get_u32(b, o_res) as i32,
            flags: get_u32(b, o_fl),
        })
    }

    pub fn encode_ce(&self, ce: &Ce, b: &mut [u8]) {
        let b = &mut b[..self.ce_size as usize];
        b.fill(0);
        let [o_tid, o_res, o_fl] = self.ce_offsets();
        let (c, d) = self.crc_offsets();
        if let Some(o) = c {
            put_u32(b, o, ce.ce_crc);
        }
        if let Some(o) = d {
            put_u32(b, o, ce.data_crc);
        }
        put_u64(b, o_tid, ce.req_tid);
        put_u32(b, o_res, ce.result as u32);
        put_u32(b, o_fl, ce.flags);
    }
}

const _: () = {
    let none = EntryLayout::from_flags(0);
    let both = EntryLayout::from_flags(tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC);
    assert!(none.se_size == 40 && none.ce_size == 16 && both.se_size == 48 && both.ce_size == 24);
    assert!(none.submr_off() == 0x7000 && none.submr_size() == 4_165_600);
    assert!(both.submr_off() == 0x9000 && both.submr_size() == 4_157_424);
    assert!(both.submr_off() + both.submr_size() <= chan::DATA_OFF);
};

/// Submission entry (all fields; CRC fields are 0 when the layout lacks them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Se {
    pub se_crc: u32,
    pub data_crc: u32,
    pub op: u32,
    pub flags: u32,
    pub req_tid: u64,
    pub offset: u64,
    pub len: u32,
    pub data_off: u32,
    pub data_len: u32,
}

/// Completion entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ce {
    pub ce_crc: u32,
    pub data_crc: u32,
    pub req_tid: u64,
    /// 0 or a negative errno.
    pub result: i32,
    pub flags: u32,
}

/// Negative errno values used in CE results.
pub mod errno {
    pub const EIO: i32 = -5;
    pub const EINVAL: i32 = -22;
    pub const ENOSPC: i32 = -28;
    pub const EOPNOTSUPP: i32 = -95;
    pub const EBADMSG: i32 = -74;
}

/// Maximum SE/CE size over all layouts.
pub const MAX_SE_SIZE: usize = 48;
pub const MAX_CE_SIZE: usize = 24;
