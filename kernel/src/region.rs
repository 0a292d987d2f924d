//! The shared region: one abstraction over a CXL HDM window or an ivshmem BAR,
//! implementing `device::shm::SharedMem` with real cache maintenance. Every byte
//! the device shares with the host goes through here.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::arch::cache::{self, WriteBackInsn};
use crate::memory::{MapError, MapKind, map_mmio};

/// Where the region's memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A committed CXL type-3 HDM window (HPA base).
    Cxl,
    /// ivshmem-plain BAR2 (the fast path under TCG).
    Ivshmem,
}

/// A write-back mapped shared region.
pub struct SharedRegion {
    base: u64,
    len: u64,
    pub phys: u64,
    pub source: Source,
    wb: WriteBackInsn,
}

impl SharedRegion {
    /// Map `len` bytes at physical `phys` write-back.
    pub fn map(phys: u64, len: u64, source: Source) -> Result<SharedRegion, MapError> {
        let m = map_mmio(phys, len, MapKind::WriteBack)?;
        Ok(SharedRegion {
            base: m.virt,
            len,
            phys,
            source,
            wb: cache::write_back_insn(),
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn write_back_insn(&self) -> WriteBackInsn {
        self.wb
    }

    #[track_caller]
    fn addr(&self, off: u64, len: u64, align: u64) -> u64 {
        match off.checked_add(len) {
            Some(end) if end <= self.len && off.is_multiple_of(align) => self.base + off,
            _ => panic!(
                "shared region access {off:#x}+{len:#x} outside {:#x} bytes (align {align})",
                self.len
            ),
        }
    }
}

// The unsafe blocks below are the device side's shared-memory access layer. Each
// first bounds-checks through `addr` (which panics, per the `SharedMem` contract,
// on a caller bug — protocol code goes through `Shm`, which checks first), so every
// pointer is inside the mapping created in `map`.
impl device::shm::SharedMem for SharedRegion {
    fn size(&self) -> u64 {
        self.len
    }

    fn read(&self, off: u64, buf: &mut [u8]) {
        let a = self.addr(off, buf.len() as u64, 1);
        // SAFETY: `a..a+len` is inside the mapped region; the host may write it
        // concurrently, so copy with volatile byte loads into private memory.
        for (i, b) in buf.iter_mut().enumerate() {
            *b = unsafe { core::ptr::read_volatile((a + i as u64) as *const u8) };
        }
    }

    fn write(&self, off: u64, data: &[u8]) {
        let a = self.addr(off, data.len() as u64, 1);
        for (i, b) in data.iter().enumerate() {
            // SAFETY: inside the mapped region (checked above).
            unsafe { core::ptr::write_volatile((a + i as u64) as *mut u8, *b) };
        }
    }

    fn fill(&self, off: u64, len: u64, byte: u8) {
        let a = self.addr(off, len, 1);
        for i in 0..len {
            // SAFETY: inside the mapped region (checked above).
            unsafe { core::ptr::write_volatile((a + i) as *mut u8, byte) };
        }
    }

    fn load_u32(&self, off: u64) -> u32 {
        let a = self.addr(off, 4, 4);
        // SAFETY: aligned, inside the region; atomics are valid on WB memory.
        unsafe { (*(a as *const AtomicU32)).load(Ordering::Acquire) }
    }

    fn store_u32(&self, off: u64, v: u32) {
        let a = self.addr(off, 4, 4);
        // SAFETY: as in `load_u32`.
        unsafe { (*(a as *const AtomicU32)).store(v, Ordering::Release) }
    }

    fn load_u64(&self, off: u64) -> u64 {
        let a = self.addr(off, 8, 8);
        // SAFETY: as in `load_u32`.
        unsafe { (*(a as *const AtomicU64)).load(Ordering::Acquire) }
    }

    fn store_u64(&self, off: u64, v: u64) {
        let a = self.addr(off, 8, 8);
        // SAFETY: as in `load_u32`.
        unsafe { (*(a as *const AtomicU64)).store(v, Ordering::Release) }
    }

    fn write_back(&self, off: u64, len: u64) {
        let a = self.addr(off, len, 1);
        // SAFETY: the range is inside the mapping.
        unsafe { cache::write_back(a, len, self.wb) }
    }

    fn invalidate(&self, off: u64, len: u64) {
        let a = self.addr(off, len, 1);
        // SAFETY: the range is inside the mapping.
        unsafe { cache::invalidate(a, len) }
    }

    fn store_fence(&self) {
        cache::store_fence()
    }

    fn full_fence(&self) {
        cache::full_fence()
    }
}
