//! Channel segment: where the control page, rings and data area live, the v3
//! control page and the non-coherent and durability lines.

use super::*;

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
