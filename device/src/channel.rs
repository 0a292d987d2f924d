//! Channel-level helpers shared by the backend and the host: ring geometry,
//! data-area copies that wrap at 12 MiB, and the non-coherent control lines.

use crate::crc::{crc32, crc32_update};
use crate::layout::*;
use crate::shm::{SharedMem, Shm, ShmResult};

/// Where a channel's pieces live in the region. Built from a validated
/// transport, so every computed offset is inside the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelGeom {
    /// Region offset of the channel segment.
    pub base: u64,
    pub el: EntryLayout,
    /// Region offsets of the non-coherent host- and device-owned lines.
    pub host_line: u64,
    pub dev_line: u64,
}

/// Bytes of the host's non-coherent line that carry data and CRC ([`nc_host::SIZE`];
/// the rest of the 64-byte line is reserved).
pub const NC_LINE_USED: usize = nc_host::SIZE;

impl ChannelGeom {
    /// `shared_line`: **sabotage for adversary tests only** — put the device line in
    /// the second half of the host's cache line (what CBD v3 does with its pointers).
    pub fn new(base: u64, flags: u16, shared_line: bool) -> Self {
        let ctrl_base = base + chan::CTRL_OFF;
        let host_line = ctrl_base + ctrl::NC_HOST_LINE;
        let dev_line = if shared_line {
            host_line + nc_host::SIZE as u64
        } else {
            ctrl_base + ctrl::NC_DEV_LINE
        };
        Self {
            base,
            el: EntryLayout::from_flags(flags),
            host_line,
            dev_line,
        }
    }
    #[inline]
    pub fn ctrl(&self, off: u64) -> u64 {
        self.base + chan::CTRL_OFF + off
    }
    #[inline]
    pub fn se(&self, pos: u32) -> u64 {
        self.base + self.el.submr_off() + pos as u64
    }
    #[inline]
    pub fn ce(&self, pos: u32) -> u64 {
        self.base + chan::COMPR_OFF + pos as u64
    }
    #[inline]
    pub fn submr_size(&self) -> u32 {
        self.el.submr_size() as u32
    }
    #[inline]
    pub fn compr_size(&self) -> u32 {
        self.el.compr_size() as u32
    }
    #[inline]
    pub fn next_se(&self, pos: u32) -> u32 {
        let n = pos + self.el.se_size;
        if n >= self.submr_size() { 0 } else { n }
    }
    #[inline]
    pub fn next_ce(&self, pos: u32) -> u32 {
        let n = pos + self.el.ce_size;
        if n >= self.compr_size() { 0 } else { n }
    }
    /// Is a ring pointer read from shared memory a legal SE position?
    pub fn valid_se_pos(&self, pos: u32) -> bool {
        pos < self.submr_size() && pos.is_multiple_of(self.el.se_size)
    }
    pub fn valid_ce_pos(&self, pos: u32) -> bool {
        pos < self.compr_size() && pos.is_multiple_of(self.el.ce_size)
    }
    /// The (up to two) region ranges of `len` payload bytes at `data_off`, wrapping.
    /// `data_off` must be `< DATA_SIZE` and `len <= DATA_SIZE` (callers validate).
    pub fn data_ranges(&self, data_off: u32, len: u32) -> [(u64, u64); 2] {
        let start = data_off as u64 % chan::DATA_SIZE;
        let len = (len as u64).min(chan::DATA_SIZE);
        let first = len.min(chan::DATA_SIZE - start);
        let data = self.base + chan::DATA_OFF;
        [(data + start, first), (data, len - first)]
    }
}

/// Copy payload out of the data area into private memory (wrapping).
pub fn copy_from_data<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    g: &ChannelGeom,
    data_off: u32,
    buf: &mut [u8],
) -> ShmResult<()> {
    let [(o1, l1), (o2, l2)] = g.data_ranges(data_off, buf.len() as u32);
    let (a, b) = buf.split_at_mut(l1 as usize);
    shm.read(o1, a)?;
    if l2 > 0 {
        shm.read(o2, &mut b[..l2 as usize])?;
    }
    Ok(())
}

/// Copy private payload into the data area (wrapping).
pub fn copy_to_data<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    g: &ChannelGeom,
    data_off: u32,
    data: &[u8],
) -> ShmResult<()> {
    let [(o1, l1), (o2, l2)] = g.data_ranges(data_off, data.len() as u32);
    shm.write(o1, &data[..l1 as usize])?;
    if l2 > 0 {
        shm.write(o2, &data[l1 as usize..(l1 + l2) as usize])?;
    }
    Ok(())
}

/// Write back (`wb`) or invalidate (`!wb`) the payload lines (wrapping).
pub fn data_cache_op<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    g: &ChannelGeom,
    data_off: u32,
    len: u32,
    wb: bool,
) -> ShmResult<()> {
    for (o, l) in g.data_ranges(data_off, len) {
        if l > 0 {
            if wb {
                shm.write_back(o, l)?;
            } else {
                shm.invalidate(o, l)?;
            }
        }
    }
    if !wb {
        // The invalidation is ordered before the loads that follow only by a full fence.
        shm.full_fence();
    }
    Ok(())
}

/// CRC over a private buffer (same as over the wrapped data area).
pub fn payload_crc(buf: &[u8]) -> u32 {
    crc32_update(0, buf)
}

/// Host-owned line (non-coherent mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostLine {
    pub epoch: u32,
    pub submr_head: u32,
    pub submr_tail: u32,
    pub compr_tail: u32,
    pub base_tid: u64,
    pub tail_tid: u64,
    /// Accepted features (low 32 bits of `features::*`), see `nc_host::FEATURES`.
    pub features: u32,
}
/// Device-owned line (non-coherent mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevLine {
    pub ack_epoch: u32,
    pub compr_head: u32,
}

impl HostLine {
    pub fn encode(&self) -> [u8; nc_host::SIZE] {
        let mut b = [0u8; nc_host::SIZE];
        put_u32(&mut b, nc_host::EPOCH, self.epoch);
        put_u32(&mut b, nc_host::SUBMR_HEAD, self.submr_head);
        put_u32(&mut b, nc_host::SUBMR_TAIL, self.submr_tail);
        put_u32(&mut b, nc_host::COMPR_TAIL, self.compr_tail);
        put_u64(&mut b, nc_host::BASE_TID, self.base_tid);
        put_u64(&mut b, nc_host::TAIL_TID, self.tail_tid);
        put_u32(&mut b, nc_host::FEATURES, self.features);
        let c = crc32(&b[4..]);
        put_u32(&mut b, nc_host::CRC, c);
        b
    }
    /// `None` if the CRC does not verify (torn or never written).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < nc_host::SIZE || get_u32(b, nc_host::CRC) != crc32(&b[4..nc_host::SIZE]) {
            return None;
        }
        Some(Self {
            epoch: get_u32(b, nc_host::EPOCH),
            submr_head: get_u32(b, nc_host::SUBMR_HEAD),
            submr_tail: get_u32(b, nc_host::SUBMR_TAIL),
            compr_tail: get_u32(b, nc_host::COMPR_TAIL),
            base_tid: get_u64(b, nc_host::BASE_TID),
            tail_tid: get_u64(b, nc_host::TAIL_TID),
            features: get_u32(b, nc_host::FEATURES),
        })
    }
}
impl DevLine {
    pub fn encode(&self) -> [u8; nc_dev::SIZE] {
        let mut b = [0u8; nc_dev::SIZE];
        put_u32(&mut b, nc_dev::ACK_EPOCH, self.ack_epoch);
        put_u32(&mut b, nc_dev::COMPR_HEAD, self.compr_head);
        let c = crc32(&b[4..]);
        put_u32(&mut b, nc_dev::CRC, c);
        b
    }
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < nc_dev::SIZE || get_u32(b, nc_dev::CRC) != crc32(&b[4..nc_dev::SIZE]) {
            return None;
        }
        Some(Self {
            ack_epoch: get_u32(b, nc_dev::ACK_EPOCH),
            compr_head: get_u32(b, nc_dev::COMPR_HEAD),
        })
    }
}

/// Read a control line into private memory (invalidating first) and decode it.
pub fn read_host_line<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    g: &ChannelGeom,
    invalidate: bool,
) -> ShmResult<Option<HostLine>> {
    let mut b = [0u8; nc_host::SIZE];
    if invalidate {
        shm.invalidate(g.host_line, b.len() as u64)?;
        shm.full_fence();
    }
    shm.read(g.host_line, &mut b)?;
    Ok(HostLine::decode(&b))
}
pub fn read_dev_line<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    g: &ChannelGeom,
    invalidate: bool,
) -> ShmResult<Option<DevLine>> {
    let mut b = [0u8; nc_dev::SIZE];
    if invalidate {
        shm.invalidate(g.dev_line, b.len() as u64)?;
        shm.full_fence();
    }
    shm.read(g.dev_line, &mut b)?;
    Ok(DevLine::decode(&b))
}
/// Store a line, write it back, fence: the publication step of the non-coherent mode.
pub fn publish_line<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    off: u64,
    bytes: &[u8],
    write_back: bool,
) -> ShmResult<()> {
    shm.write(off, bytes)?;
    if write_back {
        shm.write_back(off, bytes.len() as u64)?;
    }
    shm.store_fence();
    Ok(())
}

/// Device-owned durability line (`ctrl::DUR_DEV_LINE`, both modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurDevLine {
    pub incarnation: u32,
    /// Exclusive watermark: writes with `req_tid < durable_tid` are durable.
    pub durable_tid: u64,
}
/// Host-owned durability line (`ctrl::DUR_HOST_LINE`, both modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurHostLine {
    pub power_window_us: u64,
}

impl DurDevLine {
    pub fn encode(&self) -> [u8; dur_dev::SIZE] {
        let mut b = [0u8; dur_dev::SIZE];
        put_u32(&mut b, dur_dev::GEN, self.incarnation);
        put_u64(&mut b, dur_dev::DURABLE_TID, self.durable_tid);
        let c = crc32(&b[4..]);
        put_u32(&mut b, dur_dev::CRC, c);
        b
    }
    /// `None` if the CRC does not verify (torn, stale half, never written).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < dur_dev::SIZE || get_u32(b, dur_dev::CRC) != crc32(&b[4..dur_dev::SIZE]) {
            return None;
        }
        Some(Self {
            incarnation: get_u32(b, dur_dev::GEN),
            durable_tid: get_u64(b, dur_dev::DURABLE_TID),
        })
    }
}
impl DurHostLine {
    pub fn encode(&self) -> [u8; dur_host::SIZE] {
        let mut b = [0u8; dur_host::SIZE];
        put_u64(&mut b, dur_host::POWER_WINDOW_US, self.power_window_us);
        let c = crc32(&b[4..]);
        put_u32(&mut b, dur_host::CRC, c);
        b
    }
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < dur_host::SIZE || get_u32(b, dur_host::CRC) != crc32(&b[4..dur_host::SIZE]) {
            return None;
        }
        Some(Self {
            power_window_us: get_u64(b, dur_host::POWER_WINDOW_US),
        })
    }
}

/// Read (invalidating first in non-coherent mode) and decode the device's durability line.
pub fn read_dur_dev<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    g: &ChannelGeom,
    invalidate: bool,
) -> ShmResult<Option<DurDevLine>> {
    let mut b = [0u8; dur_dev::SIZE];
    let off = g.ctrl(ctrl::DUR_DEV_LINE);
    if invalidate {
        shm.invalidate(off, b.len() as u64)?;
        shm.full_fence();
    }
    shm.read(off, &mut b)?;
    Ok(DurDevLine::decode(&b))
}
/// Read and decode the host's durability line.
pub fn read_dur_host<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    g: &ChannelGeom,
    invalidate: bool,
) -> ShmResult<Option<DurHostLine>> {
    let mut b = [0u8; dur_host::SIZE];
    let off = g.ctrl(ctrl::DUR_HOST_LINE);
    if invalidate {
        shm.invalidate(off, b.len() as u64)?;
        shm.full_fence();
    }
    shm.read(off, &mut b)?;
    Ok(DurHostLine::decode(&b))
}
