//! Native (`std`) shared memory: coherent memory over a heap buffer or an mmap'd
//! file, as [`RawRegion`]s with no cache maintenance ([`Coherent`]); (in
//! [`crate::adversary`]) the adversarial non-coherent memory. This module only
//! allocates or maps; every access is `RawRegion`'s.

use crate::rng::SplitMix64;
use crate::shm::raw::{Coherent, RawRegion};
use std::alloc::Layout;
use std::fs::OpenOptions;
use std::path::Path;
use std::ptr::NonNull;

/// CLOCK_REALTIME in nanoseconds: the clock CBD heartbeats carry (0 before 1970).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Coherent shared memory on the heap (page-aligned, zero-initialised).
pub struct HeapMem {
    raw: RawRegion<Coherent>,
    layout: Layout,
}

impl HeapMem {
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.next_multiple_of(4096).max(4096), 4096)
            .expect("heap region too large");
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(base) = NonNull::new(p) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: a fresh allocation of at least `len` bytes, page aligned, owned by
        // this value and freed only in its `Drop`, after the region is gone; nothing but
        // the region ever accesses it (no reference into it is made).
        let raw = unsafe { RawRegion::new(base, len, Coherent) };
        Self { raw, layout }
    }
    /// A heap region initialised from `bytes` (e.g. the golden image).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let m = Self::new(bytes.len());
        m.raw.write(0, bytes);
        m
    }
    /// Snapshot of the whole region.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.raw.len()];
        self.raw.read(0, &mut v);
        v
    }
}

impl Drop for HeapMem {
    fn drop(&mut self) {
        // SAFETY: the allocation made in `new` with this layout; the region pointing
        // into it is dropped with `self` and no reference to it remains (`&mut self`).
        unsafe { std::alloc::dealloc(self.raw.base().as_ptr(), self.layout) }
    }
}
crate::forward_shared_mem!(HeapMem => raw);

/// Coherent shared memory over an mmap'd file (two threads or two processes).
pub struct MmapMem {
    raw: RawRegion<Coherent>,
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
        // protocol, and this program accesses it only through the `RawRegion` below
        // (the `MmapMut`'s slice is never used).
        let mut map = unsafe { memmap2::MmapOptions::new().len(len as usize).map_mut(&f)? };
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap gave a null pointer");
        // SAFETY: `len` bytes mapped read-write and page aligned, unmapped only when
        // `_map` drops, together with the region; accessed only through the region.
        let raw = unsafe { RawRegion::new(base, len as usize, Coherent) };
        Ok(Self { raw, _map: map })
    }
}
crate::forward_shared_mem!(MmapMem => raw);

/// A RAM disk that owns its bytes (tests, benchmark). Like `SliceMedia`: stands for
/// non-volatile media unless made with [`VecMedia::volatile`].
pub struct VecMedia {
    pub data: Vec<u8>,
    pub flushes: u64,
    /// Report itself as volatile RAM (`Media::volatile_bytes`).
    pub volatile: bool,
}
impl VecMedia {
    pub fn new(len: usize) -> Self {
        Self {
            data: vec![0; len],
            flushes: 0,
            volatile: false,
        }
    }
    /// Volatile RAM media, as the kernel's RAM disk: written in place, not staged.
    pub fn volatile(len: usize) -> Self {
        Self {
            volatile: true,
            ..Self::new(len)
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
    fn volatile_bytes(&mut self) -> Option<&mut [u8]> {
        self.volatile.then_some(&mut self.data[..])
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
    /// Asynchronous writes ([`crate::media::Media::start_write`]): up to 4 held in
    /// flight, completed in random order by later `poll_done` calls (each call
    /// completes one with probability ½). Off: every write is done when started.
    pub async_writes: bool,
    in_flight: Vec<(crate::media::Ticket, u64, Vec<u8>)>,
    next_ticket: crate::media::Ticket,
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
            async_writes: false,
            in_flight: Vec::new(),
            next_ticket: 0,
        }
    }
    /// Complete one write in flight, chosen at random (it lands now).
    fn complete_one(
        &mut self,
    ) -> Option<(crate::media::Ticket, Result<(), crate::media::MediaError>)> {
        if self.in_flight.is_empty() {
            return None;
        }
        let i = (self.rng.next() % self.in_flight.len() as u64) as usize;
        let (t, offset, data) = self.in_flight.swap_remove(i);
        let r = crate::media::Media::write(self, offset, &data);
        Some((t, r))
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
    fn can_start(&self) -> bool {
        self.in_flight.len() < 4
    }
    fn start_write(
        &mut self,
        offset: u64,
        data: &[u8],
    ) -> Result<crate::media::Started, crate::media::MediaError> {
        if !self.async_writes {
            return self
                .write(offset, data)
                .map(|()| crate::media::Started::Done);
        }
        if offset + data.len() as u64 > self.size() {
            return Err(crate::media::MediaError::OutOfRange);
        }
        let t = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.in_flight.push((t, offset, data.to_vec()));
        Ok(crate::media::Started::InFlight(t))
    }
    fn poll_done(
        &mut self,
    ) -> Option<(crate::media::Ticket, Result<(), crate::media::MediaError>)> {
        if self.in_flight.is_empty() || self.rng.next().is_multiple_of(2) {
            return None;
        }
        self.complete_one()
    }
    fn wait_done(
        &mut self,
    ) -> Option<(crate::media::Ticket, Result<(), crate::media::MediaError>)> {
        self.complete_one()
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

/// A media whose asynchronous writes and flushes ([`crate::media::Media::start_write`],
/// `start_flush`) stay in flight until the test completes them ([`HeldMedia::complete`]),
/// in any order, with any result: a slow disk. Reads and synchronous calls act at once.
/// A flush makes durable what had completed when it started ([`HeldMedia::durable`]).
pub struct HeldMedia {
    cur: Vec<u8>,
    durable: Vec<u8>,
    held: Vec<(crate::media::Ticket, Held)>,
    done: std::collections::VecDeque<(crate::media::Ticket, Result<(), crate::media::MediaError>)>,
    next: crate::media::Ticket,
    /// Most requests in flight at once (`can_start` is false at this many).
    pub limit: usize,
    /// Most requests seen in flight at once.
    pub max_held: usize,
    pub flushes: u64,
    /// Panic when anyone waits for a completion (`wait_done`): the serve loop must not.
    pub forbid_wait: bool,
}

enum Held {
    Write { offset: u64, data: Vec<u8> },
    Flush { image: Vec<u8> },
}

impl HeldMedia {
    pub fn new(len: usize) -> Self {
        Self {
            cur: vec![0; len],
            durable: vec![0; len],
            held: Vec::new(),
            done: Default::default(),
            next: 0,
            limit: 8,
            max_held: 0,
            flushes: 0,
            forbid_wait: false,
        }
    }
    /// What reads see (every completed write).
    pub fn current(&self) -> &[u8] {
        &self.cur
    }
    /// What a power loss now would leave (completed writes covered by a completed flush).
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }
    /// Writes in flight: (ticket, offset, length), oldest first.
    pub fn held_writes(&self) -> Vec<(crate::media::Ticket, u64, usize)> {
        self.held
            .iter()
            .filter_map(|(t, h)| match h {
                Held::Write { offset, data } => Some((*t, *offset, data.len())),
                Held::Flush { .. } => None,
            })
            .collect()
    }
    /// The flush in flight, if any.
    pub fn held_flush(&self) -> Option<crate::media::Ticket> {
        self.held
            .iter()
            .find(|(_, h)| matches!(h, Held::Flush { .. }))
            .map(|(t, _)| *t)
    }
    /// Complete request `t` with `ok` (else an I/O error): a write lands (or not), a
    /// flush makes its image durable. Reported at the next `poll_done`.
    pub fn complete(&mut self, t: crate::media::Ticket, ok: bool) {
        let i = self
            .held
            .iter()
            .position(|(x, _)| *x == t)
            .expect("no such request in flight");
        let (_, h) = self.held.remove(i);
        if ok {
            match h {
                Held::Write { offset, data } => {
                    self.cur[offset as usize..][..data.len()].copy_from_slice(&data)
                }
                Held::Flush { image } => {
                    self.durable = image;
                    self.flushes += 1;
                }
            }
        }
        let r = if ok {
            Ok(())
        } else {
            Err(crate::media::MediaError::Io)
        };
        self.done.push_back((t, r));
    }
    fn hold(&mut self, h: Held) -> crate::media::Started {
        let t = self.next;
        self.next += 1;
        self.held.push((t, h));
        self.max_held = self.max_held.max(self.held.len());
        crate::media::Started::InFlight(t)
    }
}

impl crate::media::Media for HeldMedia {
    fn size(&self) -> u64 {
        self.cur.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), crate::media::MediaError> {
        crate::media::SliceMedia::new(&mut self.cur).read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), crate::media::MediaError> {
        crate::media::SliceMedia::new(&mut self.cur).write(offset, data)
    }
    fn flush(&mut self) -> Result<(), crate::media::MediaError> {
        self.durable.copy_from_slice(&self.cur);
        self.flushes += 1;
        Ok(())
    }
    fn can_start(&self) -> bool {
        self.held.len() < self.limit
    }
    fn start_write(
        &mut self,
        offset: u64,
        data: &[u8],
    ) -> Result<crate::media::Started, crate::media::MediaError> {
        if offset + data.len() as u64 > self.size() {
            return Err(crate::media::MediaError::OutOfRange);
        }
        Ok(self.hold(Held::Write {
            offset,
            data: data.to_vec(),
        }))
    }
    fn start_flush(&mut self) -> Result<crate::media::Started, crate::media::MediaError> {
        let image = self.cur.clone();
        Ok(self.hold(Held::Flush { image }))
    }
    fn poll_done(
        &mut self,
    ) -> Option<(crate::media::Ticket, Result<(), crate::media::MediaError>)> {
        self.done.pop_front()
    }
    fn wait_done(
        &mut self,
    ) -> Option<(crate::media::Ticket, Result<(), crate::media::MediaError>)> {
        assert!(
            !self.forbid_wait,
            "waited for the media (the serve loop must not)"
        );
        if self.done.is_empty()
            && let Some(&(t, _)) = self.held.first()
        {
            self.complete(t, true);
        }
        self.done.pop_front()
    }
}
