//! The shared region: one abstraction over a CXL HDM window or an ivshmem BAR, mapped
//! write-back. Every byte the device shares with the host goes through its
//! `device::shm::raw::RawRegion` (the atomic copies and words, written once for the
//! kernel, `cbd-host` and the native tests); this module brings the mapping and the
//! cache primitives of the arch layer (CLWB/CLFLUSHOPT/CLFLUSH, SFENCE, MFENCE).

use core::ptr::NonNull;

use device::shm::raw::{CacheOps, RawRegion};

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

/// The kernel's cache primitives: `arch::cache` with the best write-back instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCache {
    wb: WriteBackInsn,
}

impl CacheOps for KernelCache {
    unsafe fn write_back(&self, addr: *const u8, len: usize) {
        // SAFETY: the range is mapped (this trait's contract; the region passes its own).
        unsafe { cache::write_back(addr.addr() as u64, len as u64, self.wb) }
    }
    unsafe fn invalidate(&self, addr: *const u8, len: usize) {
        // SAFETY: as in `write_back`; `cache::invalidate` ends with MFENCE.
        unsafe { cache::invalidate(addr.addr() as u64, len as u64) }
    }
    fn store_fence(&self) {
        cache::store_fence()
    }
    fn full_fence(&self) {
        cache::full_fence()
    }
}

/// A write-back mapped shared region.
pub struct SharedRegion {
    raw: RawRegion<KernelCache>,
    pub phys: u64,
    pub source: Source,
}

impl SharedRegion {
    /// Map `len` bytes at physical `phys` write-back.
    pub fn map(phys: u64, len: u64, source: Source) -> Result<SharedRegion, MapError> {
        let m = map_mmio(phys, len, MapKind::WriteBack)?;
        let cache = KernelCache {
            wb: cache::write_back_insn(),
        };
        let base = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(
            m.virt as usize,
        ))
        .expect("map_mmio gave address 0");
        // SAFETY: `map_mmio` mapped `len` bytes at `m.virt` (page aligned, write-back), and
        // the kernel never unmaps them; nothing but `RawRegion`s over them accesses them.
        let raw = unsafe { RawRegion::new(base, len as usize, cache) };
        Ok(SharedRegion { raw, phys, source })
    }

    pub fn len(&self) -> u64 {
        self.raw.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// A view of `[off, off+len)` of this region (clamped), e.g. a transport that
    /// starts after Linux devdax metadata. Panics unless `off` is 8-aligned (the
    /// protocol's words would not be).
    pub fn window(&self, off: u64, len: u64) -> SharedRegion {
        let off = off.min(self.len());
        let len = len.min(self.len() - off);
        // SAFETY: `off <= len()`, so the address is inside the mapping or one past it.
        let base = unsafe { self.raw.base().add(off as usize) };
        // SAFETY: `[base, base + len)` is inside this region's mapping, which is
        // permanent (see `map`); regions over the same memory are allowed to coexist.
        let raw = unsafe { RawRegion::new(base, len as usize, *self.raw.cache()) };
        SharedRegion {
            raw,
            phys: self.phys + off,
            source: self.source,
        }
    }

    pub fn write_back_insn(&self) -> WriteBackInsn {
        self.raw.cache().wb
    }
}

device::forward_shared_mem!(SharedRegion => raw);
