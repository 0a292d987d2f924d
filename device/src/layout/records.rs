//! Two-copy records: the meta header (first 8 bytes of every copy), object states,
//! our extension area and the host/backend/blkdev/segment/management records.

use super::*;

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
