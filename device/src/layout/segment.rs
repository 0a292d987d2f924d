//! Channel segment: where the control page, rings and data area live, the v3
//! control page and the non-coherent and durability lines.

use super::*;

/// Offsets inside a channel segment.
pub mod chan {
    use super::MIB;

    pub const SEG_INFO0: u64 = 0;
    pub const SEG_INFO1: u64 = 0x1000;
    pub const CTRL_OFF: u64 = 0x2000;
    pub const COMPR_OFF: u64 = 0x3000;
    pub const COMPR_ENTRIES: u64 = 1024;
    /// Data area: payloads, allocated in [`DATA_ALIGN`] units, wrapping at the end.
    pub const DATA_OFF: u64 = 4 * MIB;
    pub const DATA_SIZE: u64 = 12 * MIB;
    pub const DATA_ALIGN: u32 = 4096;
    /// Maximum I/O size a host may submit (256 × 4 KiB = 1 MiB).
    pub const MAX_IO: u32 = 256 * DATA_ALIGN;
}
const _: () = {
    assert!(chan::SEG_INFO1 == chan::SEG_INFO0 + PAGE as u64);
    assert!(chan::COMPR_OFF == chan::CTRL_OFF + PAGE as u64);
    assert!(chan::DATA_OFF + chan::DATA_SIZE == SEGMENT_SIZE);
    assert!(chan::MAX_IO as u64 <= chan::DATA_SIZE && chan::MAX_IO == 1 << 20);
};

wire! {
    /// Channel control page (offsets relative to `chan::CTRL_OFF`): the v3 part is
    /// `struct cbd_channel_ctrl`; the lines of our extensions follow at fixed,
    /// line-aligned places.
    pub mod ctrl: 88 bytes as u64 {
        /// Bit 0: [`FLAG_POLLING`].
        FLAGS: u64 = 0,
        /// Two copies of [`super::mgmt_rec`] (host).
        MGMT_CMD: [u8; 2 * mgmt_rec::SIZE] = 8,
        /// Two copies of [`super::mgmt_rec`] (device).
        MGMT_RET: [u8; 2 * mgmt_rec::SIZE] = 40,
        SUBMR_HEAD: u32 = 72,
        SUBMR_TAIL: u32 = 76,
        COMPR_HEAD: u32 = 80,
        COMPR_TAIL: u32 = 84,
    }
    /// End of the v3 control struct.
    pub const V3_END: u64 = SIZE as u64;
    pub const FLAG_POLLING: u64 = 1;

    /// Non-coherent mode: host-owned line ([`super::nc_host`]; only the host ever
    /// stores here).
    pub const NC_HOST_LINE: u64 = 0x100;
    /// Non-coherent mode: device-owned line ([`super::nc_dev`]; only the device ever
    /// stores here).
    pub const NC_DEV_LINE: u64 = 0x140;
    /// Durability tokens, both modes: device-owned line ([`super::dur_dev`]).
    pub const DUR_DEV_LINE: u64 = 0x180;
    /// Durability tokens, both modes: host-owned line ([`super::dur_host`]).
    pub const DUR_HOST_LINE: u64 = 0x1C0;
}
const _: () = {
    use ctrl::*;
    assert!(NC_HOST_LINE >= V3_END && NC_HOST_LINE.is_multiple_of(LINE as u64));
    assert!(NC_DEV_LINE >= NC_HOST_LINE + LINE as u64 && NC_DEV_LINE.is_multiple_of(LINE as u64));
    assert!(NC_DEV_LINE + (LINE as u64) <= PAGE as u64);
    assert!(DUR_DEV_LINE >= NC_DEV_LINE + LINE as u64 && DUR_DEV_LINE.is_multiple_of(LINE as u64));
    assert!(DUR_HOST_LINE >= DUR_DEV_LINE + LINE as u64);
    assert!(
        DUR_HOST_LINE.is_multiple_of(LINE as u64) && DUR_HOST_LINE + LINE as u64 <= PAGE as u64
    );
};

wire! {
    /// Device-owned durability line at `ctrl::DUR_DEV_LINE` (CRC over bytes 4..SIZE).
    /// Written only when the blkdev accepted `features::DURABLE_TOKENS`.
    pub mod dur_dev: 16 bytes as usize {
        CRC: u32 = 0,
        /// Backend incarnation: bumped at every backend start / re-attach. A host that
        /// sees it change knows staged (completed, unconfirmed) writes may be lost.
        GEN: u32 = 4,
        /// Watermark, exclusive: every WRITE/WRITE_ZEROES/DISCARD of this channel with
        /// `req_tid < durable_tid` is on non-volatile media. 0 = nothing confirmed yet.
        DURABLE_TID: u64 = 8,
    }
}
wire! {
    /// Host-owned durability line at `ctrl::DUR_HOST_LINE` (CRC over bytes 4..SIZE).
    pub mod dur_host: 16 bytes as usize {
        CRC: u32 = 0,
        /// Reserved (0).
        RSVD: u32 = 4,
        /// Microseconds the host guarantees power after a completion (0 = none).
        POWER_WINDOW_US: u64 = 8,
    }
}
wire! {
    /// Host-owned control line of the non-coherent mode at `ctrl::NC_HOST_LINE` (CRC
    /// over bytes 4..SIZE; the rest of the 64-byte line is reserved).
    pub mod nc_host: 48 bytes as usize {
        CRC: u32 = 0,
        EPOCH: u32 = 4,
        SUBMR_HEAD: u32 = 8,
        SUBMR_TAIL: u32 = 12,
        COMPR_TAIL: u32 = 16,
        /// First req_tid of this epoch (host tids are monotonic across resets).
        BASE_TID: u64 = 24,
        /// req_tid of the SE at `submr_tail` (what a re-attaching device expects first).
        TAIL_TID: u64 = 32,
        /// Features this host accepted for the channel (u32, e.g. DURABLE_TOKENS); it
        /// travels with the epoch bump because nothing orders the blkdev record before it.
        /// (Was reserved for the power window, which lives in `ctrl::DUR_HOST_LINE`.)
        FEATURES: u32 = 40,
    }
}
wire! {
    /// Device-owned control line of the non-coherent mode at `ctrl::NC_DEV_LINE` (CRC
    /// over bytes 4..SIZE; the rest of the 64-byte line is reserved).
    pub mod nc_dev: 16 bytes as usize {
        CRC: u32 = 0,
        ACK_EPOCH: u32 = 4,
        COMPR_HEAD: u32 = 8,
        RSVD: u32 = 12,
    }
    /// Reserved, outside the CRC'd part (unused: the watermark lives in
    /// `ctrl::DUR_DEV_LINE` in both modes).
    pub const RESERVED_DURABLE_TID: usize = 16;
}
const _: () = {
    assert!(dur_dev::SIZE <= LINE && dur_host::SIZE <= LINE);
    assert!(nc_host::SIZE <= LINE && nc_dev::RESERVED_DURABLE_TID + 8 <= LINE);
    assert!(nc_dev::SIZE <= nc_dev::RESERVED_DURABLE_TID);
};
