//! Transport info (offset 0 of the transport, 80 bytes, single copy, no CRC) and
//! the region-wide constants of the format.

use super::*;

wire! {
    /// Transport info: offset 0 of the transport, 80 bytes, a single copy without CRC
    /// (v3 `struct cbd_transport_info`).
    pub mod tinfo: 80 bytes as usize {
        MAGIC: u64 = 0,
        VERSION: u16 = 8,
        /// [`super::tflags`].
        FLAGS: u16 = 10,
        HOST_AREA_OFF: u64 = 16,
        HOST_INFO_SIZE: u32 = 24,
        HOST_NUM: u32 = 28,
        BACKEND_AREA_OFF: u64 = 32,
        BACKEND_INFO_SIZE: u32 = 40,
        BACKEND_NUM: u32 = 44,
        BLKDEV_AREA_OFF: u64 = 48,
        BLKDEV_INFO_SIZE: u32 = 56,
        BLKDEV_NUM: u32 = 60,
        SEGMENT_AREA_OFF: u64 = 64,
        SEGMENT_SIZE: u32 = 72,
        SEGMENT_NUM: u32 = 76,
    }
}
const _: () = assert!(tinfo::SIZE <= PAGE && tinfo::SIZE as u64 <= HOST_AREA_OFF);

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
