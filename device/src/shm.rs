//! The shared-memory access layer: every access to the shared region, on both
//! sides, goes through [`SharedMem`] (the platform's primitive) wrapped by [`Shm`]
//! (bounds checks + trace).
//!
//! * [`raw`]: the one implementation over real memory, [`raw::RawRegion`] — the
//!   copies in and out and the atomic words, written once with defined behaviour
//!   (its module docs say why), generic over the platform's cache primitives
//!   ([`raw::CacheOps`]). The kernel (its CXL window or ivshmem BAR, CLWB/CLFLUSHOPT/
//!   SFENCE/MFENCE through its arch layer), `cbd-host` (an `mmap`, the same
//!   instructions from user space) and [`crate::native`] (heap or file memory,
//!   coherent: no cache maintenance) each bring a mapping and a [`raw::CacheOps`].
//! * The adversarial non-coherent memory ([`crate::adversary`], feature `std`)
//!   implements `SharedMem` as a simulation, over private memory.

use crate::trace::{TraceEvent, Tracer};

#[allow(unsafe_code)] // the shared-memory access layer: atomic accesses of mapped memory
pub mod raw;

/// Primitive access to the shared region.
///
/// Offsets are byte offsets from the start of the region. Implementations **must**
/// check `off + len <= size()` (and alignment for the 4/8-byte accesses) and panic
/// on violation so they stay sound; protocol code never passes such values because
/// it goes through [`Shm`], which returns an error first.
pub trait SharedMem {
    /// Region size in bytes.
    fn size(&self) -> u64;
    /// Copy `buf.len()` bytes at `off` into private memory.
    fn read(&self, off: u64, buf: &mut [u8]);
    /// Store `data` at `off` (stores may stay in this agent's cache).
    fn write(&self, off: u64, data: &[u8]);
    /// Store `len` copies of `byte` at `off`.
    fn fill(&self, off: u64, len: u64, byte: u8);
    /// 4-byte load with acquire ordering (`off` 4-aligned).
    fn load_u32(&self, off: u64) -> u32;
    /// 4-byte store with release ordering (`off` 4-aligned).
    fn store_u32(&self, off: u64, v: u32);
    /// 8-byte load with acquire ordering (`off` 8-aligned).
    fn load_u64(&self, off: u64) -> u64;
    /// 8-byte store with release ordering (`off` 8-aligned).
    fn store_u64(&self, off: u64, v: u64);
    /// Write back every cache line overlapping `[off, off+len)` (CLWB/CLFLUSHOPT).
    fn write_back(&self, off: u64, len: u64);
    /// Drop this agent's cached copies of the lines overlapping the range (CLFLUSH).
    fn invalidate(&self, off: u64, len: u64);
    /// Order earlier stores and write-backs before later stores (SFENCE).
    fn store_fence(&self);
    /// Full fence (MFENCE).
    fn full_fence(&self);
}

/// An access outside the region or misaligned: always a bug or a hostile value,
/// reported instead of panicking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds {
    pub off: u64,
    pub len: u64,
}

/// Checked, traced view of a [`SharedMem`].
pub struct Shm<'a, M: SharedMem + ?Sized> {
    pub mem: &'a M,
    pub tracer: &'a dyn Tracer,
}

impl<M: SharedMem + ?Sized> Clone for Shm<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: SharedMem + ?Sized> Copy for Shm<'_, M> {}

pub type ShmResult<T> = Result<T, OutOfBounds>;

impl<'a, M: SharedMem + ?Sized> Shm<'a, M> {
    pub fn new(mem: &'a M, tracer: &'a dyn Tracer) -> Self {
        Self { mem, tracer }
    }
    #[inline]
    pub fn size(&self) -> u64 {
        self.mem.size()
    }
    #[inline]
    pub fn check(&self, off: u64, len: u64, align: u64) -> ShmResult<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.mem.size() && off.is_multiple_of(align) => Ok(()),
            _ => Err(OutOfBounds { off, len }),
        }
    }
    pub fn read(&self, off: u64, buf: &mut [u8]) -> ShmResult<()> {
        self.check(off, buf.len() as u64, 1)?;
        self.mem.read(off, buf);
        Ok(())
    }
    pub fn write(&self, off: u64, data: &[u8]) -> ShmResult<()> {
        self.check(off, data.len() as u64, 1)?;
        self.mem.write(off, data);
        Ok(())
    }
    pub fn fill(&self, off: u64, len: u64, byte: u8) -> ShmResult<()> {
        self.check(off, len, 1)?;
        self.mem.fill(off, len, byte);
        Ok(())
    }
    pub fn load_u32(&self, off: u64) -> ShmResult<u32> {
        self.check(off, 4, 4)?;
        Ok(self.mem.load_u32(off))
    }
    pub fn store_u32(&self, off: u64, v: u32) -> ShmResult<()> {
        self.check(off, 4, 4)?;
        self.mem.store_u32(off, v);
        Ok(())
    }
    pub fn load_u64(&self, off: u64) -> ShmResult<u64> {
        self.check(off, 8, 8)?;
        Ok(self.mem.load_u64(off))
    }
    pub fn store_u64(&self, off: u64, v: u64) -> ShmResult<()> {
        self.check(off, 8, 8)?;
        self.mem.store_u64(off, v);
        Ok(())
    }
    pub fn write_back(&self, off: u64, len: u64) -> ShmResult<()> {
        self.check(off, len, 1)?;
        self.mem.write_back(off, len);
        self.tracer.event(&TraceEvent::WrittenBack { off, len });
        Ok(())
    }
    pub fn invalidate(&self, off: u64, len: u64) -> ShmResult<()> {
        self.check(off, len, 1)?;
        self.mem.invalidate(off, len);
        self.tracer.event(&TraceEvent::Invalidated { off, len });
        Ok(())
    }
    pub fn store_fence(&self) {
        self.mem.store_fence()
    }
    pub fn full_fence(&self) {
        self.mem.full_fence()
    }
}
