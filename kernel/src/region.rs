//! The shared region: one abstraction over a CXL HDM window or an ivshmem BAR,
//! implementing `device::shm::SharedMem` with real cache maintenance. Every byte
//! the device shares with the host goes through here.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence};

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

    /// A view of `[off, off+len)` of this region (clamped), e.g. a transport that
    /// starts after Linux devdax metadata.
    pub fn window(&self, off: u64, len: u64) -> SharedRegion {
        let off = off.min(self.len);
        let len = len.min(self.len - off);
        SharedRegion {
            base: self.base + off,
            len,
            phys: self.phys + off,
            source: self.source,
            wb: self.wb,
        }
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
        // SAFETY: `a..a+len` is inside the mapped region (checked above) and `buf` is
        // private memory, so they do not overlap. The host may store to the range
        // concurrently; the protocol tolerates torn copies (it copies first, then
        // validates seq/CRC), and ordering comes from the fences and the acquire
        // loads of the ring pointers, not from this copy.
        unsafe { core::ptr::copy_nonoverlapping(a as *const u8, buf.as_mut_ptr(), buf.len()) };
        compiler_fence(Ordering::SeqCst);
    }

    fn write(&self, off: u64, data: &[u8]) {
        let a = self.addr(off, data.len() as u64, 1);
        compiler_fence(Ordering::SeqCst);
        // SAFETY: inside the mapped region (checked above); `data` is private memory.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), a as *mut u8, data.len()) };
        compiler_fence(Ordering::SeqCst);
    }

    fn fill(&self, off: u64, len: u64, byte: u8) {
        let a = self.addr(off, len, 1);
        compiler_fence(Ordering::SeqCst);
        // SAFETY: inside the mapped region (checked above).
        unsafe { core::ptr::write_bytes(a as *mut u8, byte, len as usize) };
        compiler_fence(Ordering::SeqCst);
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
