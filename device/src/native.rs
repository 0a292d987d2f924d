//! Native (`std`) implementations of [`SharedMem`]: coherent memory over a heap
//! buffer or an mmap'd file, and (in [`crate::adversary`]) the adversarial
//! non-coherent memory.

use crate::rng::SplitMix64;
use crate::shm::SharedMem;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::fs::OpenOptions;
use std::path::Path;

/// CLOCK_REALTIME in nanoseconds: the clock CBD heartbeats carry (0 before 1970).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Coherent memory over a raw mapping. All other coherent impls wrap this.
struct Raw {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `Raw` is only a pointer to memory that is shared by design; every access
// goes through the methods below, which use atomics for the published words and
// plain copies for bytes that the protocol hands over with acquire/release.
unsafe impl Send for Raw {}
// SAFETY: see `Send`; concurrent use from several threads is the point of the type.
unsafe impl Sync for Raw {}

impl Raw {
    #[inline]
    fn check(&self, off: u64, len: usize, align: u64) -> usize {
        let end = off
            .checked_add(len as u64)
            .expect("shared access overflows");
        assert!(
            end <= self.len as u64 && off.is_multiple_of(align),
            "shared access out of bounds or misaligned"
        );
        off as usize
    }
}

impl SharedMem for Raw {
    fn size(&self) -> u64 {
        self.len as u64
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        let o = self.check(off, buf.len(), 1);
        // SAFETY: bounds checked above; `buf` is private memory and cannot overlap the
        // shared mapping. The peer may store concurrently; the protocol only relies on
        // these bytes after an acquire load of the index that publishes them.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.add(o), buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, off: u64, data: &[u8]) {
        let o = self.check(off, data.len(), 1);
        // SAFETY: bounds checked above; `data` is private memory (no overlap).
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(o), data.len()) }
    }
    fn fill(&self, off: u64, len: u64, byte: u8) {
        let o = self.check(off, len as usize, 1);
        // SAFETY: bounds checked above.
        unsafe { core::ptr::write_bytes(self.ptr.add(o), byte, len as usize) }
    }
    fn load_u32(&self, off: u64) -> u32 {
        let o = self.check(off, 4, 4);
        // SAFETY: in bounds and 4-aligned (the mapping base is page aligned).
        unsafe { (*(self.ptr.add(o) as *const AtomicU32)).load(Ordering::Acquire) }
    }
    fn store_u32(&self, off: u64, v: u32) {
        let o = self.check(off, 4, 4);
        // SAFETY: in bounds and 4-aligned.
        unsafe { (*(self.ptr.add(o) as *const AtomicU32)).store(v, Ordering::Release) }
    }
    fn load_u64(&self, off: u64) -> u64 {
        let o = self.check(off, 8, 8);
        // SAFETY: in bounds and 8-aligned.
        unsafe { (*(self.ptr.add(o) as *const AtomicU64)).load(Ordering::Acquire) }
    }
    fn store_u64(&self, off: u64, v: u64) {
        let o = self.check(off, 8, 8);
        // SAFETY: in bounds and 8-aligned.
        unsafe { (*(self.ptr.add(o) as *const AtomicU64)).store(v, Ordering::Release) }
    }
    fn write_back(&self, _off: u64, _len: u64) {}
    fn invalidate(&self, _off: u64, _len: u64) {}
    fn store_fence(&self) {
        fence(Ordering::Release)
    }
    fn full_fence(&self) {
        fence(Ordering::SeqCst)
    }
}

macro_rules! forward_shared_mem {
    ($t:ty) => {
        impl SharedMem for $t {
            fn size(&self) -> u64 {
                self.raw.size()
            }
            fn read(&self, off: u64, buf: &mut [u8]) {
                self.raw.read(off, buf)
            }
            fn write(&self, off: u64, data: &[u8]) {
                self.raw.write(off, data)
            }
            fn fill(&self, off: u64, len: u64, byte: u8) {
                self.raw.fill(off, len, byte)
            }
            fn load_u32(&self, off: u64) -> u32 {
                self.raw.load_u32(off)
            }
            fn store_u32(&self, off: u64, v: u32) {
                self.raw.store_u32(off, v)
            }
            fn load_u64(&self, off: u64) -> u64 {
                self.raw.load_u64(off)
            }
            fn store_u64(&self, off: u64, v: u64) {
                self.raw.store_u64(off, v)
            }
            fn write_back(&self, off: u64, len: u64) {
                self.raw.write_back(off, len)
            }
            fn invalidate(&self, off: u64, len: u64) {
                self.raw.invalidate(off, len)
            }
            fn store_fence(&self) {
                self.raw.store_fence()
            }
            fn full_fence(&self) {
                self.raw.full_fence()
            }
        }
    };
}

/// Coherent shared memory on the heap (page-aligned, zero-initialised).
pub struct HeapMem {
    raw: Raw,
    _buf: Box<[Page]>,
}
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; 4096]);

impl HeapMem {
    pub fn new(len: usize) -> Self {
        let pages = len.div_ceil(4096);
        let mut buf: Box<[Page]> = vec![Page([0; 4096]); pages].into_boxed_slice();
        let raw = Raw {
            ptr: buf.as_mut_ptr() as *mut u8,
            len,
        };
        Self { raw, _buf: buf }
    }
    /// A heap region initialised from `bytes` (e.g. the golden image).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let m = Self::new(bytes.len());
        m.raw.write(0, bytes);
        m
    }
    /// Snapshot of the whole region.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.raw.len];
        self.raw.read(0, &mut v);
        v
    }
}
forward_shared_mem!(HeapMem);

/// Coherent shared memory over an mmap'd file (two threads or two processes).
pub struct MmapMem {
    raw: Raw,
    _map: memmap2::MmapMut,
}
impl MmapMem {
    /// Map `path`, creating/extending it to `len` bytes.
    pub fn create(path: &Path, len: u64) -> std::io::Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if f.metadata()?.len() < len {
            f.set_len(len)?;
        }
        // SAFETY: a shared file mapping; other mappers of the file are peers of the
        // protocol, and all accesses go through `Raw`, which never hands out references.
        let mut map = unsafe { memmap2::MmapOptions::new().len(len as usize).map_mut(&f)? };
        let raw = Raw {
            ptr: map.as_mut_ptr(),
            len: len as usize,
        };
        Ok(Self { raw, _map: map })
    }
}
forward_shared_mem!(MmapMem);

/// A RAM disk that owns its bytes (tests, benchmark).
pub struct VecMedia {
    pub data: Vec<u8>,
    pub flushes: u64,
}
impl VecMedia {
    pub fn new(len: usize) -> Self {
        Self {
            data: vec![0; len],
            flushes: 0,
        }
    }
}
impl crate::media::Media for VecMedia {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), crate::media::MediaError> {
        crate::media::SliceMedia::new(&mut self.data).read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), crate::media::MediaError> {
        crate::media::SliceMedia::new(&mut self.data).write(offset, data)
    }
    fn flush(&mut self) -> Result<(), crate::media::MediaError> {
        self.flushes += 1;
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), crate::media::MediaError> {
        crate::media::SliceMedia::new(&mut self.data).write_zeroes(offset, len)
    }
}

/// Records every trace event (tests assert on them).
#[derive(Default)]
pub struct RecordingTracer {
    pub events: std::sync::Mutex<Vec<crate::trace::TraceEvent>>,
}
impl crate::trace::Tracer for RecordingTracer {
    fn event(&self, ev: &crate::trace::TraceEvent) {
        self.events.lock().unwrap().push(*ev);
    }
}
impl RecordingTracer {
    pub fn take(&self) -> Vec<crate::trace::TraceEvent> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// Simulated media cost (the journal bench): a write costs `write_ns_per_4k` per
/// 4 KiB, a flush `flush_ns`. Costs are paid by sleeping once at least 50 µs are
/// owed (so a busy device does not burn a shared core spinning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCost {
    pub write_ns_per_4k: u64,
    pub flush_ns: u64,
}

/// A media with a volatile write cache: everything not yet flushed may be lost
/// in a crash, in any combination, 4 KiB block by block (each block ends up
/// holding its last flushed content or any one version written since).
pub struct CrashMedia {
    cur: Vec<u8>,
    durable: Vec<u8>,
    /// (block, content) of every write since the last flush, in order.
    unflushed: Vec<(usize, Box<[u8]>)>,
    pub writes: u64,
    pub flushes: u64,
    pub cost: MediaCost,
    debt_ns: u64,
    /// Take a crash image at each media call with this probability (per mille):
    /// crash points *inside* a write-back sequence, checked by the caller.
    pub snapshot_per_mille: u64,
    pub snapshots: Vec<Vec<u8>>,
    rng: SplitMix64,
}

pub const CRASH_BLOCK: usize = 4096;

impl CrashMedia {
    pub fn new(len: usize, seed: u64) -> Self {
        assert!(len.is_multiple_of(CRASH_BLOCK));
        Self {
            cur: vec![0; len],
            durable: vec![0; len],
            unflushed: Vec::new(),
            writes: 0,
            flushes: 0,
            cost: MediaCost::default(),
            debt_ns: 0,
            snapshot_per_mille: 0,
            snapshots: Vec::new(),
            rng: SplitMix64::new(seed),
        }
    }
    /// What reads see (every completed write).
    pub fn current(&self) -> &[u8] {
        &self.cur
    }
    /// Writes not yet flushed.
    pub fn unflushed(&self) -> usize {
        self.unflushed.len()
    }
    /// One possible media content after a power loss now.
    pub fn crash_image(&mut self) -> Vec<u8> {
        let mut img = self.durable.clone();
        // For each touched block pick uniformly among "flushed" and each version.
        let mut seen: std::collections::HashMap<usize, u64> = Default::default();
        for (b, _) in &self.unflushed {
            *seen.entry(*b).or_default() += 1;
        }
        let mut pick: std::collections::HashMap<usize, u64> = Default::default();
        let mut blocks: Vec<_> = seen.into_iter().collect();
        blocks.sort_unstable();
        for (b, n) in blocks {
            let k = self.rng.next() % (n + 1); // 0 = keep flushed content
            pick.insert(b, k);
        }
        let mut count: std::collections::HashMap<usize, u64> = Default::default();
        for (b, data) in &self.unflushed {
            let c = count.entry(*b).or_default();
            *c += 1;
            if pick.get(b) == Some(c) {
                img[b * CRASH_BLOCK..][..CRASH_BLOCK].copy_from_slice(data);
            }
        }
        img
    }
    /// Power loss: the media now holds one possible crash image (returned too).
    pub fn crash(&mut self) -> Vec<u8> {
        let img = self.crash_image();
        self.cur.copy_from_slice(&img);
        self.durable.copy_from_slice(&img);
        self.unflushed.clear();
        img
    }
    fn maybe_snapshot(&mut self) {
        if self.snapshot_per_mille > 0 && self.rng.next() % 1000 < self.snapshot_per_mille {
            let img = self.crash_image();
            self.snapshots.push(img);
        }
    }
    fn pay(&mut self, ns: u64) {
        self.debt_ns += ns;
        if self.debt_ns >= 50_000 {
            let t = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_nanos(self.debt_ns));
            self.debt_ns = self.debt_ns.saturating_sub(t.elapsed().as_nanos() as u64);
        }
    }
}

impl crate::media::Media for CrashMedia {
    fn size(&self) -> u64 {
        self.cur.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), crate::media::MediaError> {
        crate::media::SliceMedia::new(&mut self.cur).read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), crate::media::MediaError> {
        self.maybe_snapshot();
        crate::media::SliceMedia::new(&mut self.cur).write(offset, data)?;
        let (first, end) = (
            offset as usize / CRASH_BLOCK,
            (offset as usize + data.len()).div_ceil(CRASH_BLOCK),
        );
        for b in first..end {
            let blk = self.cur[b * CRASH_BLOCK..][..CRASH_BLOCK].into();
            self.unflushed.push((b, blk));
        }
        self.writes += 1;
        let c = self.cost.write_ns_per_4k * data.len().div_ceil(CRASH_BLOCK) as u64;
        self.pay(c);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), crate::media::MediaError> {
        self.maybe_snapshot();
        for (b, data) in self.unflushed.drain(..) {
            self.durable[b * CRASH_BLOCK..][..CRASH_BLOCK].copy_from_slice(&data);
        }
        self.flushes += 1;
        self.pay(self.cost.flush_ns);
        Ok(())
    }
}
