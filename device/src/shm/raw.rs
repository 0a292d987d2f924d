//! The one raw shared region: every byte this program shares with another agent is
//! accessed here, by the same code, on every platform. The kernel
//! (`kernel/src/region.rs`), `cbd-host` (`host/src/linux/mem.rs`) and the native tests
//! ([`crate::native`]) only bring a mapping and their cache primitives ([`CacheOps`]).
//!
//! # Why the accesses are defined behaviour
//!
//! Shared memory is written by another agent (the other VM, another process, another
//! thread of the native tests) at any time, including while we copy it: a hostile or
//! crashed peer, a torn record being rewritten, a re-attaching backend scanning
//! entries the host is marking DONE. In Rust's memory model (C++20's) a *data race*
//! — two conflicting accesses, not ordered by happens-before, at least one of them
//! **non-atomic** — is undefined behaviour, whatever the protocol later does with the
//! bytes (CRC, seq, re-read). A plain `copy_nonoverlapping` over such memory is that
//! non-atomic access, and mixing it with atomic words on the same bytes does not help.
//! The compiler is entitled to assume the bytes do not change under a plain copy
//! (re-read them, split, merge or invent accesses).
//!
//! So this module has one discipline, for every access of region bytes, with no
//! exception:
//!
//! * **every access is atomic**: copies in and out ([`RawRegion::read`],
//!   [`RawRegion::write`], [`RawRegion::fill`]) are sequences of *relaxed* atomic
//!   loads/stores, each of a naturally aligned piece — `AtomicU64` for the aligned
//!   middle, `AtomicU32`/`AtomicU16`/`AtomicU8` for the unaligned edges (the largest
//!   piece the address allows); the protocol's words are acquire/release `AtomicU32`/
//!   `AtomicU64`. An atomic reference is made with `&*ptr.cast::<AtomicU64>()` on an
//!   aligned, in-bounds address, and lives for one access;
//! * nothing else of this program touches the bytes: no Rust reference into the
//!   region, no plain load or store (the constructors' safety contract);
//! * ordering comes from the protocol's release stores and acquire loads of its ring
//!   pointers and from the fences: a relaxed copy sequenced before a release store is
//!   visible to whoever acquires that store (the message-passing pattern). Bytes read
//!   without such an edge (a torn record) are *some* value each piece held — which is
//!   what the protocol's seq/CRC checks are designed for — never UB.
//!
//! The decomposition depends only on the address: two copies of overlapping ranges use
//! the very same `AtomicU64` on every aligned word both cover entirely (e.g. the two
//! sides of a record copy). Accesses of *different* sizes to overlapping bytes remain
//! possible (a copy's `AtomicU64` over a 4-byte flags word another agent stores with
//! `AtomicU32`; a peer outside this program that uses its own sizes). Rust's docs
//! inherit C++'s rule that racing atomic accesses must not *partially* overlap unless
//! both are reads; C++ simply has no mixed-size atomics. The semantics we rely on
//! there are those of what rustc emits — LLVM's memory model, in which a racing atomic
//! load returns, byte by byte, one of the values atomically stored (never undef, never
//! UB) — and the hardware's
//! (x86: naturally aligned loads and stores of up to 8 bytes are single-copy atomic,
//! whatever the sizes of the accesses they race with). We know of no way to avoid this
//! without atomic read-modify-writes on shared memory, which CXL shared memory across
//! hosts does not provide.
//!
//! **Read-only regions** ([`ReadOnly`], the inspector's `PROT_READ` mapping) only ever
//! load, with `Relaxed` ordering, at most 8 bytes at a time: Rust documents exactly
//! those loads as allowed on read-only memory (a larger or stronger load may be a
//! compare-exchange that faults). Acquire is obtained with an acquire fence after the
//! relaxed load — on every region, so both kinds share one load path.
//!
//! # What the hardware does, and what it costs
//!
//! On x86_64 a relaxed atomic load or store of 1, 2, 4 or 8 bytes is a plain `mov`;
//! acquire loads and release stores are plain `mov`s too (x86 is TSO), and the acquire
//! fence is only a compiler barrier. So the instructions are those of a hand-written
//! copy loop. What is lost against `memcpy`: atomics are never merged or vectorised,
//! so there are no 16/32-byte SIMD moves and no `rep movsb` — 8 bytes per instruction.
//! On the 1 MiB data path (host/benches/ring.rs, "shared copy") that costs 10 – 15 % of
//! a single copy's bandwidth against the plain copies it replaced (about 17 – 19 GiB/s
//! instead of 19 – 20 on our machine), invisible in the ring's request rates; the
//! figures are in docs/kernel.md ("The shared-memory access layer").
//!
//! # Cache maintenance
//!
//! Coherence is the platform's business ([`CacheOps`]: CLWB/CLFLUSHOPT/CLFLUSH,
//! SFENCE, MFENCE, or nothing on coherent memory). Every call is bracketed here by
//! compiler fences, so no access of the copies moves across it whatever the
//! primitive is made of.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{
    AtomicU8, AtomicU16, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
    compiler_fence, fence,
};

use super::SharedMem;

/// Cache line size the platforms step by (every x86_64 we target).
pub const LINE: usize = 64;

/// A platform's cache-maintenance primitives over address ranges of a region.
///
/// The region calls them only with ranges inside itself (bounds checked first).
pub trait CacheOps {
    /// Write back every cache line overlapping `[addr, addr + len)` towards memory
    /// (CLWB, else CLFLUSHOPT, else CLFLUSH; nothing on coherent memory).
    ///
    /// # Safety
    /// The range is mapped (readable) in this address space.
    unsafe fn write_back(&self, addr: *const u8, len: usize);
    /// Drop this agent's cached copies of the lines overlapping the range (CLFLUSH),
    /// and order later loads after that (MFENCE): the next load comes from memory.
    ///
    /// # Safety
    /// The range is mapped (readable) in this address space.
    unsafe fn invalidate(&self, addr: *const u8, len: usize);
    /// Order earlier stores and write-backs before later stores (SFENCE).
    fn store_fence(&self);
    /// Full fence (MFENCE).
    fn full_fence(&self);
}

/// Coherent memory (a heap buffer, a file mapping of one machine): no cache
/// maintenance; the fences are the language's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coherent;

impl CacheOps for Coherent {
    unsafe fn write_back(&self, _addr: *const u8, _len: usize) {}
    unsafe fn invalidate(&self, _addr: *const u8, _len: usize) {}
    fn store_fence(&self) {
        fence(Release)
    }
    fn full_fence(&self) {
        fence(SeqCst)
    }
}

/// The address of every cache line overlapping `[addr, addr + len)` (for platforms
/// that flush line by line).
pub fn lines(addr: *const u8, len: usize) -> impl Iterator<Item = usize> {
    let first = addr.addr() & !(LINE - 1);
    let end = addr.addr().saturating_add(len);
    (first..end).step_by(LINE)
}

/// Access marker: the region may be stored to.
#[derive(Debug)]
pub enum ReadWrite {}
/// Access marker: the region is mapped read-only; it has no store methods at all,
/// and its [`SharedMem`] stores panic before touching memory.
///
/// ```compile_fail
/// use device::shm::raw::{Coherent, ReadOnlyRegion};
/// fn store(r: &ReadOnlyRegion<Coherent>) {
///     r.write(0, b"x"); // no such method: a read-only region cannot store
/// }
/// ```
#[derive(Debug)]
pub enum ReadOnly {}

/// A read-only raw region.
pub type ReadOnlyRegion<C> = RawRegion<C, ReadOnly>;

/// A mapped shared region: a base, a length and the platform's cache primitives.
/// All accesses are bounds checked (and panic, per the [`SharedMem`] contract, on a
/// caller's bug) and atomic (module docs).
pub struct RawRegion<C, A = ReadWrite> {
    base: NonNull<u8>,
    len: usize,
    cache: C,
    _access: PhantomData<A>,
}

// SAFETY: a `RawRegion` is a pointer to memory that is shared by design; it never
// hands out references into it and every access is atomic (module docs), so using it
// from several threads is exactly the concurrency the accesses are made for.
unsafe impl<C: Send, A> Send for RawRegion<C, A> {}
// SAFETY: see `Send`: `&RawRegion` only allows atomic accesses.
unsafe impl<C: Sync, A> Sync for RawRegion<C, A> {}

impl<C: CacheOps> RawRegion<C, ReadWrite> {
    /// A read-write region of `len` bytes at `base`.
    ///
    /// Panics if `base` is not 8-aligned (the protocol's words would not be).
    ///
    /// # Safety
    /// * `[base, base + len)` is mapped readable and writable for as long as this
    ///   value exists;
    /// * while it exists, this program accesses those bytes only through
    ///   `RawRegion`s (there may be several over the same memory): no Rust reference
    ///   into them, no plain load or store. Other agents (threads through their own
    ///   `RawRegion`, other processes, VMs, devices) may access them at any time.
    pub unsafe fn new(base: NonNull<u8>, len: usize, cache: C) -> Self {
        // SAFETY: our caller keeps the contract above, which is `with_access`'s for
        // `ReadWrite`.
        unsafe { Self::with_access(base, len, cache) }
    }
}

impl<C: CacheOps> RawRegion<C, ReadOnly> {
    /// A read-only region of `len` bytes at `base`: it only ever loads, with relaxed
    /// atomic accesses of at most 8 bytes (module docs), so the mapping may be
    /// `PROT_READ`.
    ///
    /// Panics if `base` is not 8-aligned.
    ///
    /// # Safety
    /// As [`RawRegion::new`], except that the range need only be mapped readable.
    pub unsafe fn new_read_only(base: NonNull<u8>, len: usize, cache: C) -> Self {
        // SAFETY: our caller keeps the contract above, which is `with_access`'s for
        // `ReadOnly`.
        unsafe { Self::with_access(base, len, cache) }
    }
}

impl<C: CacheOps, A> RawRegion<C, A> {
    /// The one constructor behind [`RawRegion::new`] and [`RawRegion::new_read_only`].
    ///
    /// Panics if `base` is not 8-aligned.
    ///
    /// # Safety
    /// The contract of the public constructor for the access `A`: that of
    /// [`RawRegion::new`] for [`ReadWrite`] (the range mapped readable and writable),
    /// that of [`RawRegion::new_read_only`] for [`ReadOnly`] (mapped readable).
    unsafe fn with_access(base: NonNull<u8>, len: usize, cache: C) -> Self {
        assert!(
            base.addr().get().is_multiple_of(8),
            "shared region base {base:p} is not 8-aligned"
        );
        Self {
            base,
            len,
            cache,
            _access: PhantomData,
        }
    }

    /// Region size in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The mapping's base (for the owner's `munmap`; nothing else may access it).
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }
    /// The platform's cache primitives.
    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// Address of `[off, off + len)`, `off` a multiple of `align`; panics outside.
    #[inline]
    #[track_caller]
    fn at(&self, off: u64, len: u64, align: u64) -> *mut u8 {
        match off.checked_add(len) {
            Some(end) if end <= self.len as u64 && off.is_multiple_of(align) => {
                // SAFETY: `off <= end <= self.len`, so the result is inside the region
                // or one past its end (`len == 0`); the base is 8-aligned, so `off`'s
                // alignment is the address's for `align <= 8`.
                unsafe { self.base.as_ptr().add(off as usize) }
            }
            _ => panic!(
                "shared access [{off:#x}, +{len:#x}) out of bounds ({:#x}) or misaligned (align {align})",
                self.len
            ),
        }
    }

    /// Copy `buf.len()` bytes at `off` into private memory.
    #[inline]
    #[track_caller]
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        let p = self.at(off, buf.len() as u64, 1);
        // SAFETY: `[p, p + buf.len())` is inside the region (checked by `at`); the
        // region's bytes are only accessed atomically (constructor contract).
        unsafe { copy_out(p, buf) }
    }
    /// 4-byte load with acquire ordering (`off` 4-aligned).
    #[inline]
    #[track_caller]
    pub fn load_u32(&self, off: u64) -> u32 {
        let p = self.at(off, 4, 4);
        // SAFETY: 4 bytes in bounds, 4-aligned (checked by `at`).
        let v = unsafe { atomic::<AtomicU32>(p) }.load(Relaxed);
        fence(Acquire);
        v
    }
    /// 8-byte load with acquire ordering (`off` 8-aligned).
    #[inline]
    #[track_caller]
    pub fn load_u64(&self, off: u64) -> u64 {
        let p = self.at(off, 8, 8);
        // SAFETY: 8 bytes in bounds, 8-aligned (checked by `at`).
        let v = unsafe { atomic::<AtomicU64>(p) }.load(Relaxed);
        fence(Acquire);
        v
    }
    /// Drop this agent's cached copies of the lines overlapping the range.
    #[track_caller]
    pub fn invalidate(&self, off: u64, len: u64) {
        let p = self.at(off, len, 1);
        compiler_fence(SeqCst);
        // SAFETY: the range is inside the region, which is mapped readable.
        unsafe { self.cache.invalidate(p, len as usize) };
        compiler_fence(SeqCst);
    }
    /// Order earlier stores and write-backs before later stores (SFENCE).
    #[inline]
    pub fn store_fence(&self) {
        compiler_fence(SeqCst);
        self.cache.store_fence();
        compiler_fence(SeqCst);
    }
    /// Full fence (MFENCE).
    #[inline]
    pub fn full_fence(&self) {
        compiler_fence(SeqCst);
        self.cache.full_fence();
        compiler_fence(SeqCst);
    }
}

impl<C: CacheOps> RawRegion<C, ReadWrite> {
    /// Store `data` at `off` (stores may stay in this agent's cache).
    #[inline]
    #[track_caller]
    pub fn write(&self, off: u64, data: &[u8]) {
        let p = self.at(off, data.len() as u64, 1);
        // SAFETY: `[p, p + data.len())` is inside the region, which is writable and
        // only accessed atomically (constructor contract).
        unsafe { copy_in(p, data) }
    }
    /// Store `len` copies of `byte` at `off`.
    #[inline]
    #[track_caller]
    pub fn fill(&self, off: u64, len: u64, byte: u8) {
        let p = self.at(off, len, 1);
        // SAFETY: as in `write`.
        unsafe { fill(p, len as usize, byte) }
    }
    /// 4-byte store with release ordering (`off` 4-aligned).
    #[inline]
    #[track_caller]
    pub fn store_u32(&self, off: u64, v: u32) {
        let p = self.at(off, 4, 4);
        // SAFETY: 4 bytes in bounds, 4-aligned, writable.
        unsafe { atomic::<AtomicU32>(p) }.store(v, Release)
    }
    /// 8-byte store with release ordering (`off` 8-aligned).
    #[inline]
    #[track_caller]
    pub fn store_u64(&self, off: u64, v: u64) {
        let p = self.at(off, 8, 8);
        // SAFETY: 8 bytes in bounds, 8-aligned, writable.
        unsafe { atomic::<AtomicU64>(p) }.store(v, Release)
    }
    /// Write back every cache line overlapping the range.
    #[track_caller]
    pub fn write_back(&self, off: u64, len: u64) {
        let p = self.at(off, len, 1);
        compiler_fence(SeqCst);
        // SAFETY: the range is inside the region, which is mapped.
        unsafe { self.cache.write_back(p, len as usize) };
        compiler_fence(SeqCst);
    }
}

impl<C: CacheOps> SharedMem for RawRegion<C, ReadWrite> {
    fn size(&self) -> u64 {
        self.len as u64
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        RawRegion::read(self, off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) {
        RawRegion::write(self, off, data)
    }
    fn fill(&self, off: u64, len: u64, byte: u8) {
        RawRegion::fill(self, off, len, byte)
    }
    fn load_u32(&self, off: u64) -> u32 {
        RawRegion::load_u32(self, off)
    }
    fn store_u32(&self, off: u64, v: u32) {
        RawRegion::store_u32(self, off, v)
    }
    fn load_u64(&self, off: u64) -> u64 {
        RawRegion::load_u64(self, off)
    }
    fn store_u64(&self, off: u64, v: u64) {
        RawRegion::store_u64(self, off, v)
    }
    fn write_back(&self, off: u64, len: u64) {
        RawRegion::write_back(self, off, len)
    }
    fn invalidate(&self, off: u64, len: u64) {
        RawRegion::invalidate(self, off, len)
    }
    fn store_fence(&self) {
        RawRegion::store_fence(self)
    }
    fn full_fence(&self) {
        RawRegion::full_fence(self)
    }
}

/// A read-only region as a [`SharedMem`] (the inspector's interface): loads as
/// above; every store panics before touching memory (the mapping would fault), and
/// there is nothing of ours to write back.
impl<C: CacheOps> SharedMem for RawRegion<C, ReadOnly> {
    fn size(&self) -> u64 {
        self.len as u64
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        RawRegion::read(self, off, buf)
    }
    fn write(&self, off: u64, _data: &[u8]) {
        refused(off)
    }
    fn fill(&self, off: u64, _len: u64, _byte: u8) {
        refused(off)
    }
    fn load_u32(&self, off: u64) -> u32 {
        RawRegion::load_u32(self, off)
    }
    fn store_u32(&self, off: u64, _v: u32) {
        refused(off)
    }
    fn load_u64(&self, off: u64) -> u64 {
        RawRegion::load_u64(self, off)
    }
    fn store_u64(&self, off: u64, _v: u64) {
        refused(off)
    }
    fn write_back(&self, _off: u64, _len: u64) {}
    fn invalidate(&self, off: u64, len: u64) {
        RawRegion::invalidate(self, off, len)
    }
    fn store_fence(&self) {
        RawRegion::store_fence(self)
    }
    fn full_fence(&self) {
        RawRegion::full_fence(self)
    }
}

#[track_caller]
fn refused(off: u64) -> ! {
    panic!("store at {off:#x} into a read-only shared mapping refused")
}

/// `impl SharedMem for $t` by forwarding every method to its `RawRegion` field
/// (the platform types that own a mapping: `native::HeapMem`, `cbd-host`'s
/// `MappedMem`, the kernel's `SharedRegion`).
#[macro_export]
macro_rules! forward_shared_mem {
    ($t:ty => $field:ident) => {
        impl $crate::shm::SharedMem for $t {
            #[inline]
            fn size(&self) -> u64 {
                $crate::shm::SharedMem::size(&self.$field)
            }
            #[inline]
            fn read(&self, off: u64, buf: &mut [u8]) {
                $crate::shm::SharedMem::read(&self.$field, off, buf)
            }
            #[inline]
            fn write(&self, off: u64, data: &[u8]) {
                $crate::shm::SharedMem::write(&self.$field, off, data)
            }
            #[inline]
            fn fill(&self, off: u64, len: u64, byte: u8) {
                $crate::shm::SharedMem::fill(&self.$field, off, len, byte)
            }
            #[inline]
            fn load_u32(&self, off: u64) -> u32 {
                $crate::shm::SharedMem::load_u32(&self.$field, off)
            }
            #[inline]
            fn store_u32(&self, off: u64, v: u32) {
                $crate::shm::SharedMem::store_u32(&self.$field, off, v)
            }
            #[inline]
            fn load_u64(&self, off: u64) -> u64 {
                $crate::shm::SharedMem::load_u64(&self.$field, off)
            }
            #[inline]
            fn store_u64(&self, off: u64, v: u64) {
                $crate::shm::SharedMem::store_u64(&self.$field, off, v)
            }
            #[inline]
            fn write_back(&self, off: u64, len: u64) {
                $crate::shm::SharedMem::write_back(&self.$field, off, len)
            }
            #[inline]
            fn invalidate(&self, off: u64, len: u64) {
                $crate::shm::SharedMem::invalidate(&self.$field, off, len)
            }
            #[inline]
            fn store_fence(&self) {
                $crate::shm::SharedMem::store_fence(&self.$field)
            }
            #[inline]
            fn full_fence(&self) {
                $crate::shm::SharedMem::full_fence(&self.$field)
            }
        }
    };
}

/// The atomic types this module accesses region bytes with.
trait Atomic {}
impl Atomic for AtomicU8 {}
impl Atomic for AtomicU16 {}
impl Atomic for AtomicU32 {}
impl Atomic for AtomicU64 {}

/// The atomic `T` at `p`, for one access.
///
/// # Safety
/// `size_of::<T>()` bytes at `p` are inside a region of this module and `p` is
/// aligned for `T`.
#[inline(always)]
unsafe fn atomic<'r, T: Atomic>(p: *const u8) -> &'r T {
    debug_assert!(p.addr().is_multiple_of(align_of::<T>()));
    // SAFETY: aligned and in bounds (caller); the bytes are mapped for as long as the
    // region exists and this program only ever accesses them atomically (constructor
    // contract), which is what `AtomicU64::from_ptr` and friends require. For a
    // read-only region, only relaxed loads of at most 8 bytes are made through it
    // (module docs), the loads Rust allows on read-only memory. The reference lives for
    // one access, never beyond the region's borrow.
    unsafe { &*p.cast::<T>() }
}

/// Loads `dst.len()` bytes at `src` into private `dst`, one relaxed atomic load per
/// naturally aligned piece (8 bytes in the aligned middle).
///
/// # Safety
/// `[src, src + dst.len())` is inside a region of this module.
#[inline]
unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let d = dst.as_mut_ptr();
    let mut i = 0;
    while i < len {
        // In every block of this loop: a piece of `k` bytes is loaded only where
        // `i + k <= len` and the address is a multiple of `k` (checked first), so it is
        // inside the caller's range and aligned; the private store goes to
        // `dst[i..i + k]`, in bounds for the same reason.
        // SAFETY: `i < len`, so `src + i` is inside the caller's range.
        let s = unsafe { src.add(i) };
        let rem = len - i;
        if s.addr().is_multiple_of(8) && rem >= 8 {
            let words = rem / 8;
            for w in 0..words {
                // SAFETY: `8 * w + 8 <= rem` and `s` is 8-aligned (see above).
                unsafe {
                    let v = atomic::<AtomicU64>(s.add(8 * w)).load(Relaxed);
                    d.add(i + 8 * w).cast::<u64>().write_unaligned(v);
                }
            }
            i += 8 * words;
        } else if s.addr().is_multiple_of(4) && rem >= 4 {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe {
                let v = atomic::<AtomicU32>(s).load(Relaxed);
                d.add(i).cast::<u32>().write_unaligned(v);
            }
            i += 4;
        } else if s.addr().is_multiple_of(2) && rem >= 2 {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe {
                let v = atomic::<AtomicU16>(s).load(Relaxed);
                d.add(i).cast::<u16>().write_unaligned(v);
            }
            i += 2;
        } else {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe { *d.add(i) = atomic::<AtomicU8>(s).load(Relaxed) };
            i += 1;
        }
    }
}

/// Stores private `data` at `dst`, one relaxed atomic store per naturally aligned
/// piece (8 bytes in the aligned middle).
///
/// # Safety
/// `[dst, dst + data.len())` is inside a writable region of this module.
#[inline]
unsafe fn copy_in(dst: *mut u8, data: &[u8]) {
    let len = data.len();
    let s = data.as_ptr();
    let mut i = 0;
    while i < len {
        // In every block of this loop: as in `copy_out`, with the roles swapped.
        // SAFETY: `i < len`, so `dst + i` is inside the caller's range.
        let d = unsafe { dst.add(i) };
        let rem = len - i;
        if d.addr().is_multiple_of(8) && rem >= 8 {
            let words = rem / 8;
            for w in 0..words {
                // SAFETY: `8 * w + 8 <= rem` and `d` is 8-aligned (see above).
                unsafe {
                    let v = s.add(i + 8 * w).cast::<u64>().read_unaligned();
                    atomic::<AtomicU64>(d.add(8 * w)).store(v, Relaxed);
                }
            }
            i += 8 * words;
        } else if d.addr().is_multiple_of(4) && rem >= 4 {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe {
                let v = s.add(i).cast::<u32>().read_unaligned();
                atomic::<AtomicU32>(d).store(v, Relaxed);
            }
            i += 4;
        } else if d.addr().is_multiple_of(2) && rem >= 2 {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe {
                let v = s.add(i).cast::<u16>().read_unaligned();
                atomic::<AtomicU16>(d).store(v, Relaxed);
            }
            i += 2;
        } else {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe { atomic::<AtomicU8>(d).store(*s.add(i), Relaxed) };
            i += 1;
        }
    }
}

/// Stores `len` copies of `byte` at `dst`, piece by piece as [`copy_in`].
///
/// # Safety
/// `[dst, dst + len)` is inside a writable region of this module.
#[inline]
unsafe fn fill(dst: *mut u8, len: usize, byte: u8) {
    let mut i = 0;
    while i < len {
        // In every block of this loop: as in `copy_in`.
        // SAFETY: `i < len`, so `dst + i` is inside the caller's range.
        let d = unsafe { dst.add(i) };
        let rem = len - i;
        if d.addr().is_multiple_of(8) && rem >= 8 {
            let words = rem / 8;
            let v = u64::from_ne_bytes([byte; 8]);
            for w in 0..words {
                // SAFETY: `8 * w + 8 <= rem` and `d` is 8-aligned (see above).
                unsafe { atomic::<AtomicU64>(d.add(8 * w)).store(v, Relaxed) };
            }
            i += 8 * words;
        } else if d.addr().is_multiple_of(4) && rem >= 4 {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe { atomic::<AtomicU32>(d).store(u32::from_ne_bytes([byte; 4]), Relaxed) };
            i += 4;
        } else if d.addr().is_multiple_of(2) && rem >= 2 {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe { atomic::<AtomicU16>(d).store(u16::from_ne_bytes([byte; 2]), Relaxed) };
            i += 2;
        } else {
            // SAFETY: the piece is in bounds and aligned (see above).
            unsafe { atomic::<AtomicU8>(d).store(byte, Relaxed) };
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// A heap-backed region for the tests of this module (owner of the words).
    struct Buf {
        words: Vec<AtomicU64>,
    }
    impl Buf {
        fn new(len: usize) -> Self {
            Self {
                words: (0..len.div_ceil(8)).map(|_| AtomicU64::new(0)).collect(),
            }
        }
        fn rw(&self, len: usize) -> RawRegion<Coherent> {
            let base = NonNull::new(self.words.as_ptr() as *mut u8).unwrap();
            // SAFETY: the words are owned by `self`, which outlives the region in
            // every test, and are only accessed through regions.
            unsafe { RawRegion::new(base, len, Coherent) }
        }
        fn ro(&self, len: usize) -> ReadOnlyRegion<Coherent> {
            let base = NonNull::new(self.words.as_ptr() as *mut u8).unwrap();
            // SAFETY: as in `rw`.
            unsafe { RawRegion::new_read_only(base, len, Coherent) }
        }
    }

    #[test]
    fn copies_round_trip_at_every_alignment_and_length() {
        let b = Buf::new(256);
        let r = b.rw(256);
        let mut rng = SplitMix64::new(7);
        for off in 0..24u64 {
            for len in 0..90usize {
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                r.fill(0, 256, 0xEE);
                r.write(off, &data);
                let mut all = vec![0u8; 256];
                r.read(0, &mut all);
                let o = off as usize;
                assert!(all[..o].iter().all(|&x| x == 0xEE), "before {off}+{len}");
                assert_eq!(&all[o..o + len], &data[..], "{off}+{len}");
                assert!(
                    all[o + len..].iter().all(|&x| x == 0xEE),
                    "after {off}+{len}"
                );
                let mut back = vec![0u8; len];
                r.read(off, &mut back);
                assert_eq!(back, data);
                r.fill(off, len as u64, 0x11);
                r.read(0, &mut all);
                assert!(all[o..o + len].iter().all(|&x| x == 0x11));
                assert!(all[o + len..].iter().all(|&x| x == 0xEE));
            }
        }
    }

    #[test]
    fn words_are_little_endian_bytes_of_the_copies() {
        let b = Buf::new(64);
        let r = b.rw(64);
        r.store_u32(4, 0x1122_3344);
        r.store_u64(8, 0x0102_0304_0506_0708);
        let mut x = [0u8; 12];
        r.read(4, &mut x);
        assert_eq!(x[..4], 0x1122_3344u32.to_ne_bytes());
        assert_eq!(x[4..], 0x0102_0304_0506_0708u64.to_ne_bytes());
        r.write(16, &0xdead_beefu32.to_ne_bytes());
        assert_eq!(r.load_u32(16), 0xdead_beef);
        assert_eq!(b.ro(64).load_u64(8), 0x0102_0304_0506_0708);
    }

    #[test]
    fn read_only_region_refuses_stores_through_shared_mem() {
        let b = Buf::new(64);
        b.rw(64).write(0, b"live ring");
        let ro = b.ro(64);
        let m: &dyn SharedMem = &ro;
        for store in [
            &(|| m.write(0, b"X")) as &dyn Fn(),
            &|| m.fill(0, 1, 0),
            &|| m.store_u32(0, 0),
            &|| m.store_u64(0, 0),
        ] {
            let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(store));
            assert!(e.is_err());
        }
        let mut x = [0u8; 9];
        m.read(0, &mut x);
        assert_eq!(&x, b"live ring");
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_panics() {
        let b = Buf::new(64);
        b.rw(64).read(60, &mut [0; 5]);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_word_panics() {
        let b = Buf::new(64);
        b.rw(64).load_u32(2);
    }

    #[test]
    fn lines_cover_the_range() {
        let p = core::ptr::without_provenance::<u8>(0x1000);
        let l: Vec<usize> = lines(p.wrapping_add(60), 8).collect();
        assert_eq!(l, [0x1000, 0x1040]);
        assert_eq!(lines(p, 0).count(), 0);
        assert_eq!(lines(p, 64).count(), 1);
        assert_eq!(lines(p.wrapping_add(1), 64).count(), 2);
    }

    /// Two threads copy the same record over each other while a third reads it: every
    /// word read is one of the words written (no tearing inside an aligned word), and
    /// none of it is a data race — Miri's race detector agrees:
    /// `MIRIFLAGS=-Zmiri-disable-weak-memory-emulation cargo +nightly miri test -p device
    /// --lib shm::raw` (its weak-memory emulation does not model mixed-size atomics at
    /// all and stops with an internal error on the edges of the copies).
    #[test]
    fn racing_copies_see_whole_words() {
        let b = Buf::new(64);
        let r = b.rw(64);
        let a = [0xAAu8; 64];
        let c = [0xCCu8; 64];
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..2000 {
                    r.write(0, &a);
                }
            });
            s.spawn(|| {
                for _ in 0..2000 {
                    r.write(0, &c);
                }
            });
            for _ in 0..2000 {
                let mut x = [0u8; 64];
                r.read(0, &mut x);
                for w in x.chunks(8) {
                    assert!(w.iter().all(|&v| v == w[0]) && [0, 0xAA, 0xCC].contains(&w[0]));
                }
            }
        });
    }
}
