//! Two-copy records: the meta header (first 8 bytes of every copy), object states,
//! our extension area and the host/backend/blkdev/segment/management records.

use super::*;

wire! {
    /// Meta header: the first 8 bytes of every two-copy record.
    pub mod meta: 8 bytes as usize {
        /// crc32 (seed 0, no final xor) over bytes 4 .. end of the copy.
        CRC: u32 = 0,
        SEQ: u8 = 4,
        VERSION: u8 = 5,
        RSVD: u16 = 6,
    }
}

/// Object states shared by host/backend/blkdev/segment records.
pub const STATE_NONE: u8 = 0;
pub const STATE_RUNNING: u8 = 1;
pub const STATE_STOPPING: u8 = 2;

pub const SEG_TYPE_NONE: u8 = 0;
pub const SEG_TYPE_CHANNEL: u8 = 1;
pub const SEG_TYPE_CACHE: u8 = 2;

wire! {
    /// Extension area inside the padding of our own 4 KiB record copies (backend and
    /// blkdev), at [`ext::OFF`]. A plain CBD v3 reader never looks past its struct,
    /// and the slot CRC covers it. The constants are offsets in the copy.
    pub mod ext: 16 bytes at OFF as usize {
        /// "CBDX" ([`MAGIC_VALUE`]).
        MAGIC: u32 = 0,
        VERSION: u16 = 4,
        FEATURES: u64 = 8,
    }
    /// Where the extension area starts in a record copy.
    pub const OFF: usize = 1024;
    pub const END: usize = OFF + SIZE;
    pub const MAGIC_VALUE: u32 = u32::from_le_bytes(*b"CBDX");
}
/// Feature bits (backend record: offered; blkdev record: accepted).
pub mod features {
    /// Non-coherent channel mode (extensions §1): own lines, write-back/invalidate, CRCs.
    pub const NONCOHERENT: u64 = 1 << 0;
    /// Durability tokens (`docs/durability.md`): per-channel `durable_tid`
    /// watermark line, CE flag DURABLE, SE intent bits, host power window.
    pub const DURABLE_TOKENS: u64 = 1 << 1;
    /// DISCARD (op 3) and WRITE_ZEROES (op 4) accepted by the backend.
    pub const DISCARD_WZ: u64 = 1 << 2;
    /// Informational, never accepted: the backend's media is volatile RAM, so
    /// whatever it confirms durable (FLUSH, DURABLE CE, watermark) is on that media
    /// and is lost with the device's power (`docs/durability.md`, "Volatile media").
    pub const VOLATILE_MEDIA: u64 = 1 << 3;
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

wire! {
    /// Host info (v3 `struct cbd_host_info`, 56 bytes).
    pub mod host_rec: 56 bytes as usize {
        HEADER: [u8; 8] = 0,
        STATE: u8 = 8,
        ALIVE_TS: u64 = 16,
        HOSTNAME: [u8; HOSTNAME_LEN] = 24,
    }
    pub const HOSTNAME_LEN: usize = 32;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    pub state: u8,
    pub alive_ts: u64,
    pub hostname: [u8; host_rec::HOSTNAME_LEN],
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

wire! {
    /// Backend info (v3 `struct cbd_backend_info`, 696 bytes) plus our extension area.
    pub mod backend_rec: 696 bytes as usize {
        HEADER: [u8; 8] = 0,
        STATE: u8 = 8,
        HOST_ID: u32 = 12,
        ALIVE_TS: u64 = 16,
        /// In 512-byte sectors.
        DEV_SIZE: u64 = 24,
        PATH: [u8; PATH_LEN] = 32,
        N_HANDLERS: u32 = 160,
        HANDLER_CHANNELS: [u32; MAX_HANDLERS] = 164,
        /// `struct cbd_cache_info` (unused by cbdfw, kept as written).
        CACHE_SEG_ID: u32 = 676,
        CACHE_N_SEGS: u32 = 680,
        CACHE_GC_PERCENT: u16 = 684,
        CACHE_RES: u16 = 686,
        CACHE_RES2: u32 = 688,
    }
    pub const PATH_LEN: usize = 128;
    pub const MAX_HANDLERS: usize = 128;
}
const _: () = {
    use backend_rec::*;
    assert!(PATH + PATH_LEN == N_HANDLERS && HANDLER_CHANNELS + 4 * MAX_HANDLERS == CACHE_SEG_ID);
    assert!(SIZE <= ext::OFF && ext::END <= PAGE);
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    pub state: u8,
    pub host_id: u32,
    pub alive_ts: u64,
    /// In 512-byte sectors.
    pub dev_size: u64,
    pub path: [u8; backend_rec::PATH_LEN],
    pub n_handlers: u32,
    pub handler_channels: [u32; backend_rec::MAX_HANDLERS],
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
            path: [0; backend_rec::PATH_LEN],
            n_handlers: 0,
            handler_channels: [0; backend_rec::MAX_HANDLERS],
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
        let mut hc = [0u32; MAX_HANDLERS];
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

wire! {
    /// Blkdev info (v3 `struct cbd_blkdev_info`, 40 bytes) plus our extension area.
    pub mod blkdev_rec: 40 bytes as usize {
        HEADER: [u8; 8] = 0,
        STATE: u8 = 8,
        ALIVE_TS: u64 = 16,
        BACKEND_ID: u32 = 24,
        HOST_ID: u32 = 28,
        MAPPED_ID: u32 = 32,
    }
}
const _: () = assert!(blkdev_rec::SIZE <= ext::OFF);

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

wire! {
    /// Segment info (v3 `struct cbd_segment_info`, 20 bytes; copies at segment offset
    /// 0 and 4096).
    pub mod segment_rec: 20 bytes as usize {
        HEADER: [u8; 8] = 0,
        TYPE: u8 = 8,
        STATE: u8 = 9,
        FLAGS: u16 = 10,
        NEXT_SEG: u32 = 12,
        BACKEND_ID: u32 = 16,
    }
}

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

wire! {
    /// Management command / return record (v3 `struct cbd_channel_mgmt_cmd` /
    /// `_ret`, 16 bytes per copy, two adjacent copies).
    pub mod mgmt_rec: 16 bytes as usize {
        HEADER: [u8; 8] = 0,
        CMD_SEQ: u8 = 8,
        /// `cmd_ret` in the return record.
        CMD_OP: u8 = 9,
        RSVD: u16 = 10,
        RSVD1: u32 = 12,
    }
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
