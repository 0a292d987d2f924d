//! Staged completion and asynchronous durability (`docs/durability.md`).
//!
//! [`Stager`] sits between the backend engine and its [`Media`]: a WRITE is
//! *completed* once its payload is staged in device RAM (a caller-provided buffer,
//! no heap); staged data is written back to the media **in order** and then the
//! media is flushed; only after that flush is a write *durable*. The engine asks
//! the stager for each channel's watermark (`durable_tid`, exclusive) and
//! publishes it.
//!
//! Without a staging buffer (or when it is full) writes go straight to the media
//! (write-through) and are still only durable after the next media flush.
//!
//! Policy (the engine calls [`Stager::progress`] from every `poll` with the current
//! time): every pending write carries a deadline (`staged_at + bound / 2`, so the
//! other half of the bound is left for the write-back and the flush); once any
//! deadline has passed, everything pending then becomes a *batch* (group commit):
//! its media writes are started (asynchronously when the media can, a bounded
//! number in flight), each later `progress` collects completions and starts more,
//! and once all of them completed the media flush is started; its completion
//! retires the batch (the watermarks move). `progress` never waits for the media.
//! CRITICAL writes, FLUSH, RESET and staging pressure call [`Stager::sync`] /
//! [`Stager::write_back`], which wait (drain).

use crate::media::{Media, MediaError, Started, Ticket};

/// Most writes pending (staged or written but not yet flushed) at once. When full,
/// the next write forces a write-back + flush.
pub const MAX_PENDING: usize = 256;
/// `Pending::chan` of a write whose channel forgot it (v3 RESET): still written
/// back and flushed, but no longer counted in any watermark.
const NO_CHAN: u8 = u8::MAX;
const NOT_STAGED: u32 = u32::MAX;
/// Most media writes the stager has in flight at once (the media may allow fewer:
/// [`Media::can_start`]).
pub const MAX_IN_FLIGHT: usize = 16;
/// Largest single media write the write-back makes from a coalesced run (the
/// largest request the data path itself makes: `chan::MAX_IO`).
pub const MAX_COALESCE: usize = crate::layout::chan::MAX_IO as usize;

/// Write intent (SE bits `SE_FLAG_EPHEMERAL` / `SE_FLAG_CRITICAL`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Intent {
    /// Complete when staged; durable within the power window / device bound.
    #[default]
    Standard,
    /// Complete when staged; may stay staged up to the (larger) ephemeral bound.
    Ephemeral,
    /// Complete only when durable (FUA).
    Critical,
}

impl Intent {
    pub fn from_se_flags(flags: u32) -> Self {
        if flags & crate::layout::SE_FLAG_CRITICAL != 0 {
            Self::Critical
        } else if flags & crate::layout::SE_FLAG_EPHEMERAL != 0 {
            Self::Ephemeral
        } else {
            Self::Standard
        }
    }
    pub fn se_flags(self) -> u32 {
        match self {
            Self::Standard => 0,
            Self::Ephemeral => crate::layout::SE_FLAG_EPHEMERAL,
            Self::Critical => crate::layout::SE_FLAG_CRITICAL,
        }
    }
}

/// Durability policy of the backend (all bounds in nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableConfig {
    /// Advertise `features::DURABLE_TOKENS` in the backend record.
    pub offer: bool,
    /// Device bound for STANDARD writes: durable within this time after completion
    /// when the host gives no power window (and at most this when it gives one).
    pub standard_bound_ns: u64,
    /// Bound for EPHEMERAL writes (the power window does not shorten it).
    pub ephemeral_bound_ns: u64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            offer: true,
            standard_bound_ns: 10_000_000,   // 10 ms
            ephemeral_bound_ns: 200_000_000, // 200 ms
        }
    }
}

impl DurableConfig {
    /// Deadline by which the write-back of a write completed at `now_ns` starts.
    pub fn due(&self, intent: Intent, power_window_us: u64, now_ns: u64) -> u64 {
        let bound = match intent {
            Intent::Critical => 0,
            Intent::Ephemeral => self.ephemeral_bound_ns.max(self.standard_bound_ns),
            Intent::Standard if power_window_us > 0 => self
                .standard_bound_ns
                .min(power_window_us.saturating_mul(1000)),
            Intent::Standard => self.standard_bound_ns,
        };
        now_ns.saturating_add(bound / 2)
    }
}

/// Where a pending write is on its way to the media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wb {
    /// Only in the staging buffer.
    Staged,
    /// Its media write (maybe one of a coalesced run) is in flight: the staging bytes
    /// must stay as they are ([`Media::start_write`]).
    InFlight(Ticket),
    /// On the media (write completed), not yet flushed.
    Written,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    chan: u8,
    tid: u64,
    offset: u64,
    len: u32,
    /// Offset in the staging buffer, or `NOT_STAGED` once on the media and released.
    pos: u32,
    /// Bytes of the staging buffer this entry holds (payload + wrap waste).
    span: u32,
    wb: Wb,
    /// Deadline for its write-back to start.
    due: u64,
}

/// Staging room taken by [`Stager::reserve`] for one WRITE, and how to give it back.
#[derive(Debug)]
#[must_use = "commit or unreserve the reservation"]
pub struct Reservation {
    pos: u32,
    span: u32,
    len: u32,
    /// `head` and `used` before the reservation.
    head: usize,
    used: usize,
}

/// Counters (the kernel prints them; the bench reads them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StagerStats {
    pub staged: u64,
    pub write_through: u64,
    /// Writes copied straight into volatile RAM media ([`Stager::in_place_mut`]):
    /// neither staged nor written through, nothing left to write back or flush.
    pub in_place: u64,
    /// Writes written back, and the media writes that took (runs are coalesced).
    pub written_back: u64,
    pub write_back_ios: u64,
    pub flushes: u64,
    /// Write-backs forced by a full staging buffer or pending list.
    pub pressure: u64,
    pub media_errors: u64,
    /// Group commits started by [`Stager::progress`] (asynchronous write-backs).
    pub batches: u64,
    /// Most media writes in flight at once.
    pub max_in_flight: u64,
}

/// RAM staging + in-order write-back + media flush over any [`Media`].
pub struct Stager<'a, D: Media> {
    media: D,
    buf: &'a mut [u8],
    head: usize,
    used: usize,
    q: heapless::Deque<Pending, MAX_PENDING>,
    /// The first `written` entries of `q` are on the media (not yet flushed) and
    /// their staging room is released (in order: the buffer is a ring).
    written: usize,
    min_due: u64,
    /// The first `batch` entries are the group commit [`Stager::progress`] is
    /// making durable (0: none running).
    batch: usize,
    /// Media writes in flight (each a run of entries marked `Wb::InFlight`).
    writes_in_flight: usize,
    /// The flush in flight and how many entries (a prefix, all written) it covers.
    flushing: Option<(Ticket, usize)>,
    /// A write or flush failed: stop starting writes, report once nothing is in flight.
    failed: Option<MediaError>,
    /// False: [`Stager::progress`] writes back synchronously when due (the write-back
    /// before it was asynchronous; kept to measure the difference).
    asynchronous: bool,
    pub stats: StagerStats,
}

impl<'a, D: Media> Stager<'a, D> {
    /// `buf` is the staging budget (may be empty: write-through). Capped at 4 GiB.
    pub fn new(media: D, buf: &'a mut [u8]) -> Self {
        let n = buf.len().min(u32::MAX as usize - 1);
        Self {
            media,
            buf: &mut buf[..n],
            head: 0,
            used: 0,
            q: heapless::Deque::new(),
            written: 0,
            min_due: u64::MAX,
            batch: 0,
            writes_in_flight: 0,
            flushing: None,
            failed: None,
            asynchronous: true,
            stats: StagerStats::default(),
        }
    }
    /// Replace the staging buffer (what was staged is written back first).
    pub fn set_buffer(&mut self, buf: &'a mut [u8]) -> Result<(), MediaError> {
        self.write_back()?;
        let n = buf.len().min(u32::MAX as usize - 1);
        self.buf = &mut buf[..n];
        self.head = 0;
        self.used = 0;
        Ok(())
    }
    pub fn media(&mut self) -> &mut D {
        &mut self.media
    }
    pub fn media_ref(&self) -> &D {
        &self.media
    }
    /// Drop everything staged (power loss) and give back media and buffer — once the
    /// media requests in flight completed (they read the buffer: [`Media::start_write`]).
    pub fn into_parts(mut self) -> (D, &'a mut [u8]) {
        while self.in_flight() {
            match self.media.wait_done() {
                Some((t, r)) => self.on_done(t, r),
                None => break,
            }
        }
        (self.media, self.buf)
    }
    /// Asynchronous write-back from [`Stager::progress`] (the default), or the
    /// synchronous one that waits for the media when due (for comparison).
    pub fn set_asynchronous(&mut self, on: bool) {
        self.asynchronous = on;
    }
    /// Media requests (writes, the flush) in flight.
    pub fn in_flight(&self) -> bool {
        self.writes_in_flight > 0 || self.flushing.is_some()
    }
    pub fn size(&self) -> u64 {
        self.media.size()
    }
    /// Writes not yet durable (staged or written back but not flushed).
    pub fn pending(&self) -> usize {
        self.q.len()
    }
    /// Bytes of the staging buffer in use.
    pub fn staged_bytes(&self) -> usize {
        self.used
    }

    fn alloc(&mut self, len: usize) -> Option<(u32, u32)> {
        let cap = self.buf.len();
        if len > cap {
            return None;
        }
        let (pos, waste) = if self.head + len <= cap {
            (self.head, 0)
        } else {
            (0, cap - self.head)
        };
        if self.used + waste + len > cap {
            return None;
        }
        self.used += waste + len;
        self.head = pos + len;
        Some((pos as u32, (waste + len) as u32))
    }

    /// Room for a `len`-byte WRITE in the staging buffer, for its payload to be
    /// copied straight in ([`Stager::slot_mut`]) and then [`Stager::commit`]ted or
    /// [`Stager::unreserve`]d — one copy where [`Stager::write`] needs two. Makes
    /// room the way `write` does (sync when the pending list is full, write back
    /// under staging pressure). `None`: no room (nothing staged is left, or no
    /// buffer): write through with `write`. Nothing else may be staged between the
    /// reservation and its commit or release.
    pub fn reserve(&mut self, len: usize) -> Result<Option<Reservation>, MediaError> {
        if self.buf.is_empty() || len > self.buf.len() {
            return Ok(None);
        }
        if self.q.is_full() {
            self.stats.pressure += 1;
            self.sync()?;
        }
        let mut before = (self.head, self.used);
        let mut slot = self.alloc(len);
        if slot.is_none() {
            self.stats.pressure += 1;
            self.write_back()?;
            before = (self.head, self.used);
            slot = self.alloc(len);
        }
        Ok(slot.map(|(pos, span)| Reservation {
            pos,
            span,
            len: len as u32,
            head: before.0,
            used: before.1,
        }))
    }

    /// Is the media volatile RAM, written in place ([`Media::volatile_bytes`])? Then
    /// everything still staged is written back first (nothing is staged in front of
    /// RAM media unless a buffer was given anyway), so that a write in place cannot be
    /// overtaken by an older staged one. False: stage (or write through) as usual.
    pub fn prepare_in_place(&mut self) -> Result<bool, MediaError> {
        if self.media.volatile_bytes().is_none() {
            return Ok(false);
        }
        if self.written < self.q.len() {
            self.write_back()?;
        }
        Ok(true)
    }

    /// The media's own bytes `offset..offset + len` when it is volatile RAM and
    /// nothing staged overlays them (after [`Stager::prepare_in_place`]: a WRITE's
    /// payload is copied straight in, then [`Stager::wrote_in_place`]), or `None`.
    pub fn in_place_mut(&mut self, offset: u64, len: usize) -> Option<&mut [u8]> {
        if self.written < self.q.len() {
            return None;
        }
        let start = usize::try_from(offset).ok()?;
        self.media
            .volatile_bytes()?
            .get_mut(start..start.checked_add(len)?)
    }

    /// A WRITE went straight into volatile RAM media: on the media at once. It is
    /// not queued: there is nothing to write back, and flushing RAM changes nothing,
    /// so it counts as durable right away (as durable as the media: `VOLATILE_MEDIA`).
    pub fn wrote_in_place(&mut self) {
        self.stats.in_place += 1;
    }

    /// The reserved bytes of the staging buffer.
    pub fn slot_mut(&mut self, r: &Reservation) -> &mut [u8] {
        &mut self.buf[r.pos as usize..(r.pos + r.len) as usize]
    }

    pub fn slot(&self, r: &Reservation) -> &[u8] {
        &self.buf[r.pos as usize..(r.pos + r.len) as usize]
    }

    /// Give a reservation back (its payload never verified): nothing was staged.
    pub fn unreserve(&mut self, r: Reservation) {
        self.head = r.head;
        self.used = r.used;
    }

    /// Complete a WRITE whose payload is in the reserved slot: staged, as
    /// [`Stager::write`] stages it. Not durable yet.
    pub fn commit(&mut self, r: Reservation, chan: u8, tid: u64, offset: u64, due_ns: u64) {
        self.stats.staged += 1;
        let _ = self.q.push_back(Pending {
            chan,
            tid,
            offset,
            len: r.len,
            pos: r.pos,
            span: r.span,
            wb: Wb::Staged,
            due: due_ns,
        });
        self.min_due = self.min_due.min(due_ns);
    }

    /// Complete a WRITE: stage it (or write it through). Not durable yet.
    pub fn write(
        &mut self,
        chan: u8,
        tid: u64,
        offset: u64,
        data: &[u8],
        due_ns: u64,
    ) -> Result<(), MediaError> {
        if self.q.is_full() {
            self.stats.pressure += 1;
            self.sync()?;
        }
        let mut slot = self.alloc(data.len());
        if slot.is_none() && !self.buf.is_empty() {
            // Staging pressure: write back what is staged (in order) to make room.
            self.stats.pressure += 1;
            self.write_back()?;
            slot = self.alloc(data.len());
        }
        let (pos, span, wb) = match slot {
            Some((pos, span)) => {
                self.buf[pos as usize..pos as usize + data.len()].copy_from_slice(data);
                self.stats.staged += 1;
                (pos, span, Wb::Staged)
            }
            None => {
                // Only reached with nothing staged or in flight (after `write_back`, or
                // no buffer at all): order with the media is kept.
                self.media.write(offset, data)?;
                self.stats.write_through += 1;
                (NOT_STAGED, 0, Wb::Written)
            }
        };
        let p = Pending {
            chan,
            tid,
            offset,
            len: data.len() as u32,
            pos,
            span,
            wb,
            due: due_ns,
        };
        if pos == NOT_STAGED && self.written == self.q.len() {
            self.written += 1;
        }
        let _ = self.q.push_back(p);
        self.min_due = self.min_due.min(due_ns);
        Ok(())
    }

    /// DISCARD / WRITE_ZEROES: ordered after everything staged, durable after a flush.
    pub fn zero(
        &mut self,
        chan: u8,
        tid: u64,
        offset: u64,
        len: u64,
        discard: bool,
        due_ns: u64,
    ) -> Result<(), MediaError> {
        if self.q.is_full() {
            self.stats.pressure += 1;
            self.sync()?;
        }
        self.write_back()?;
        if discard {
            self.media.discard(offset, len)?;
        } else {
            self.media.write_zeroes(offset, len)?;
        }
        let _ = self.q.push_back(Pending {
            chan,
            tid,
            offset,
            len: 0,
            pos: NOT_STAGED,
            span: 0,
            wb: Wb::Written,
            due: due_ns,
        });
        self.written = self.q.len();
        self.min_due = self.min_due.min(due_ns);
        Ok(())
    }

    /// READ: the media, overlaid with staged data (oldest first, newest wins).
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.media.read(offset, buf)?;
        let end = offset + buf.len() as u64;
        for p in self.q.iter().skip(self.written) {
            if p.pos == NOT_STAGED {
                continue;
            }
            let (ps, pe) = (p.offset, p.offset + p.len as u64);
            let (s, e) = (ps.max(offset), pe.min(end));
            if s < e {
                let src = p.pos as usize + (s - ps) as usize;
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&self.buf[src..src + (e - s) as usize]);
            }
        }
        Ok(())
    }

    /// A media request completed: its entries are on the media (or staged again, to be
    /// retried, on error), or the flush retires what it covers.
    fn on_done(&mut self, t: Ticket, r: Result<(), MediaError>) {
        if let Some((ft, n)) = self.flushing
            && ft == t
        {
            self.flushing = None;
            match r {
                Ok(()) => self.retire(n),
                Err(e) => {
                    self.stats.media_errors += 1;
                    self.failed.get_or_insert(e);
                }
            }
            return;
        }
        let mut found = false;
        for p in self.q.iter_mut().skip(self.written) {
            if p.wb == Wb::InFlight(t) {
                found = true;
                if r.is_ok() {
                    p.wb = Wb::Written;
                    self.stats.written_back += 1;
                } else {
                    p.wb = Wb::Staged;
                }
            }
        }
        if !found {
            log::warn!("stager: completion of an unknown media request {t}");
            return;
        }
        self.writes_in_flight -= 1;
        if let Err(e) = r {
            self.stats.media_errors += 1;
            self.failed.get_or_insert(e);
        }
        self.release_written();
    }

    /// Release the staging room of the written prefix (in order: the buffer is a ring).
    fn release_written(&mut self) {
        for p in self.q.iter_mut().skip(self.written) {
            if p.wb != Wb::Written {
                break;
            }
            if p.pos != NOT_STAGED {
                self.used -= p.span as usize;
                p.pos = NOT_STAGED;
            }
            self.written += 1;
        }
        if self.used == 0 {
            self.head = 0;
        }
    }

    /// The flush covering the first `n` entries completed: they are durable.
    fn retire(&mut self, n: usize) {
        for _ in 0..n {
            self.q.pop_front();
        }
        self.written -= n;
        self.batch = self.batch.saturating_sub(n);
        self.stats.flushes += 1;
        self.min_due = self.q.iter().map(|p| p.due).min().unwrap_or(u64::MAX);
    }

    /// Start the media writes of the staged entries before `limit`, in order, as long
    /// as the media takes them. Runs of consecutive entries that are contiguous both
    /// on the media and in the staging buffer (a journal, a sequential stream) go to
    /// the media as one write of up to [`MAX_COALESCE`] bytes: on a real disk the cost
    /// of a write-back is mostly per request, not per byte. Order: a write is started
    /// only after every earlier one was started, and not while an earlier write to an
    /// overlapping range is in flight (then nothing later is started either).
    fn start_writes(&mut self, limit: usize) {
        let mut i = self.written;
        while i < limit.min(self.q.len()) && self.failed.is_none() {
            let Some(first) = self.q.iter().nth(i).copied() else {
                break;
            };
            if first.wb != Wb::Staged {
                i += 1;
                continue;
            }
            if self.writes_in_flight >= MAX_IN_FLIGHT || !self.media.can_start() {
                break;
            }
            // Extend the run while the next entry continues it on both sides.
            let (mut n, mut len) = (1usize, first.len as usize);
            for p in self.q.iter().take(limit).skip(i + 1) {
                if p.wb != Wb::Staged
                    || p.pos as usize != first.pos as usize + len
                    || p.offset != first.offset + len as u64
                    || p.span != p.len
                    || len + p.len as usize > MAX_COALESCE
                {
                    break;
                }
                n += 1;
                len += p.len as usize;
            }
            let (start, end) = (first.offset, first.offset + len as u64);
            let blocked = self.q.iter().skip(self.written).take(i).any(|p| {
                matches!(p.wb, Wb::InFlight(_)) && p.offset < end && start < p.offset + p.len as u64
            });
            if blocked {
                break;
            }
            let s = first.pos as usize;
            let wb = match self.media.start_write(first.offset, &self.buf[s..s + len]) {
                Ok(Started::Done) => {
                    self.stats.written_back += n as u64;
                    Wb::Written
                }
                Ok(Started::InFlight(t)) => {
                    self.writes_in_flight += 1;
                    let f = self.writes_in_flight as u64;
                    self.stats.max_in_flight = self.stats.max_in_flight.max(f);
                    Wb::InFlight(t)
                }
                Err(e) => {
                    self.stats.media_errors += 1;
                    self.failed = Some(e);
                    break;
                }
            };
            self.stats.write_back_ios += 1;
            for x in self.q.iter_mut().skip(i).take(n) {
                x.wb = wb;
            }
            i += n;
        }
        self.release_written();
    }

    /// Take every completion the media has (non-blocking).
    fn collect(&mut self) {
        if !self.in_flight() {
            return;
        }
        while let Some((t, r)) = self.media.poll_done() {
            self.on_done(t, r);
        }
    }

    /// Wait for one completion; false if the media has none to give.
    fn wait_one(&mut self) -> bool {
        match self.media.wait_done() {
            Some((t, r)) => {
                self.on_done(t, r);
                true
            }
            None => false,
        }
    }

    /// A failure, reported once nothing is in flight any more; the batch ends with it
    /// (what it did not make durable stays pending and is retried).
    fn take_failure(&mut self) -> Option<MediaError> {
        if self.in_flight() {
            return None;
        }
        let e = self.failed.take()?;
        self.batch = 0;
        Some(e)
    }

    /// The non-blocking write-back, called from every poll: collect completions, and
    /// once a deadline passed make everything pending then durable — start its media
    /// writes (bounded, in order), once they all completed start the flush, and once
    /// that completed retire them (the watermarks move). An error is returned once,
    /// when the requests in flight are done; nothing it touched is declared durable
    /// and the next deadline retries.
    pub fn progress(&mut self, now_ns: u64) -> Result<(), MediaError> {
        if !self.asynchronous {
            return if self.due(now_ns) {
                self.sync()
            } else {
                Ok(())
            };
        }
        self.collect();
        if let Some(e) = self.take_failure() {
            return Err(e);
        }
        if self.batch == 0 && self.flushing.is_none() && self.due(now_ns) {
            self.batch = self.q.len();
            self.stats.batches += 1;
        }
        if self.batch == 0 || self.failed.is_some() {
            return Ok(());
        }
        self.start_writes(self.batch);
        if self.written >= self.batch && self.flushing.is_none() && self.failed.is_none() {
            self.start_flush(self.written);
        }
        match self.take_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Start the media flush covering the first `n` entries (all written).
    fn start_flush(&mut self, n: usize) {
        match self.media.start_flush() {
            Ok(Started::Done) => self.retire(n),
            Ok(Started::InFlight(t)) => self.flushing = Some((t, n)),
            Err(e) => {
                self.stats.media_errors += 1;
                self.failed = Some(e);
            }
        }
    }

    /// Write every staged payload to the media, in order (no flush), and wait until
    /// those writes completed (see `start_writes` for runs and order). What is in
    /// flight completes first; a failure [`Stager::progress`] has not reported yet
    /// (counted already) is retried here instead.
    pub fn write_back(&mut self) -> Result<(), MediaError> {
        while self.in_flight() && self.wait_one() {}
        if self.in_flight() {
            return Err(MediaError::Io);
        }
        self.failed = None;
        loop {
            self.start_writes(self.q.len());
            if self.failed.is_some() || self.written == self.q.len() {
                break;
            }
            if !(self.in_flight() && self.wait_one()) {
                // Nothing in flight and nothing startable: the media takes no request.
                self.failed = Some(MediaError::Io);
                break;
            }
        }
        while self.in_flight() && self.wait_one() {}
        match self.failed.take() {
            Some(e) => {
                self.batch = 0;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Write back everything and flush the media: afterwards every write accepted
    /// so far is durable. On error nothing is declared durable. Waits for the media
    /// (also for a group commit [`Stager::progress`] has in flight: it is drained).
    pub fn sync(&mut self) -> Result<(), MediaError> {
        self.write_back()?;
        self.start_flush(self.q.len());
        while self.flushing.is_some() && self.wait_one() {}
        if self.flushing.is_some() {
            self.failed.get_or_insert(MediaError::Io);
        }
        match self.failed.take() {
            Some(e) => {
                self.batch = 0;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// True if some pending write's write-back deadline has passed.
    pub fn due(&self, now_ns: u64) -> bool {
        !self.q.is_empty() && now_ns >= self.min_due
    }

    /// Exclusive watermark of `chan`: the first pending tid, else `next_tid` (the
    /// tid the channel expects next; everything before it has been executed).
    pub fn watermark(&self, chan: u8, next_tid: u64) -> u64 {
        self.q
            .iter()
            .find(|p| p.chan == chan)
            .map_or(next_tid, |p| p.tid)
    }

    /// v3 RESET of `chan`: its tids restart; keep its writes pending but anonymous.
    pub fn forget_chan(&mut self, chan: u8) {
        for p in self.q.iter_mut() {
            if p.chan == chan {
                p.chan = NO_CHAN;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::SliceMedia;

    /// A reservation given back leaves the stager as it was — also when it wrapped
    /// or when making room wrote staged data back; a committed one is staged like
    /// `write` stages (read overlay, watermark, write-back in order).
    #[test]
    fn reserved_slots_are_given_back_exactly_or_staged_like_writes() {
        let mut disk = [0u8; 32768];
        let mut sbuf = [0u8; 8192];
        let mut s = Stager::new(SliceMedia::new(&mut disk), &mut sbuf);
        s.write(0, 0, 0, &[1u8; 3072], 100).unwrap();
        let at = |s: &Stager<'_, SliceMedia<'_>>| (s.head, s.used, s.pending(), s.stats.staged);
        let before = at(&s);
        // Fits after the first write.
        let r = s.reserve(4096).unwrap().expect("room");
        assert_eq!((r.pos, r.span), (3072, 4096));
        s.unreserve(r);
        assert_eq!(at(&s), before);
        // Commit one at 3072..7168, then a 2 KiB reservation wraps (1 KiB of waste).
        let r = s.reserve(4096).unwrap().unwrap();
        s.slot_mut(&r).fill(2);
        s.commit(r, 0, 1, 4096, 100);
        let before = at(&s);
        let r = s.reserve(1024).unwrap().unwrap();
        assert_eq!((r.pos, r.span), (7168, 1024));
        s.unreserve(r);
        assert_eq!(at(&s), before);
        // 4 KiB does not fit: making room writes both staged writes back, in order.
        let r = s.reserve(4096).unwrap().unwrap();
        assert_eq!((s.stats.pressure, s.stats.written_back), (1, 2));
        let after_room = (s.head, s.used);
        assert_eq!((r.pos, r.span), (0, 4096));
        s.unreserve(r);
        assert_eq!((s.head, s.used), (0, 0));
        assert_eq!(after_room, (4096, 4096));
        // A committed slot overlays reads and reaches the media at the next write-back.
        let r = s.reserve(2048).unwrap().unwrap();
        s.slot_mut(&r).fill(3);
        s.commit(r, 1, 9, 1024, 50);
        assert_eq!(s.watermark(1, 10), 9);
        let mut b = [0u8; 4096];
        s.read(0, &mut b).unwrap();
        assert!(b[..1024].iter().all(|&x| x == 1) && b[1024..3072].iter().all(|&x| x == 3));
        assert!(b[3072..].iter().all(|&x| x == 0));
        s.sync().unwrap();
        let (m, _) = s.into_parts();
        assert!(m.data[1024..3072].iter().all(|&x| x == 3));
        assert!(m.data[4096..8192].iter().all(|&x| x == 2));
        // Too big for the buffer, or no buffer: write through.
        let mut none: [u8; 0] = [];
        let mut d2 = [0u8; 4096];
        let mut t = Stager::new(SliceMedia::new(&mut d2), &mut none);
        assert!(t.reserve(512).unwrap().is_none());
    }

    #[test]
    fn staged_reads_overlay_and_write_back_keeps_order() {
        let mut disk = [0u8; 16384];
        let mut sbuf = [0u8; 8192];
        let mut s = Stager::new(SliceMedia::new(&mut disk), &mut sbuf);
        s.write(0, 0, 0, &[1u8; 4096], 100).unwrap();
        s.write(0, 1, 2048, &[2u8; 4096], 100).unwrap();
        let mut r = [0u8; 8192];
        s.read(0, &mut r).unwrap();
        assert!(r[..2048].iter().all(|&b| b == 1) && r[2048..6144].iter().all(|&b| b == 2));
        assert_eq!(s.watermark(0, 2), 0);
        assert!(!s.due(99) && s.due(100));
        // Third write does not fit: pressure writes the first two back, in order.
        s.write(1, 7, 8192, &[3u8; 4096], 50).unwrap();
        assert_eq!(s.stats.pressure, 1);
        assert_eq!(s.watermark(1, 8), 7);
        s.sync().unwrap();
        assert_eq!((s.watermark(0, 2), s.watermark(1, 8)), (2, 8));
        let (m, _) = s.into_parts();
        assert!(m.data[..2048].iter().all(|&b| b == 1));
        assert!(m.data[2048..6144].iter().all(|&b| b == 2));
        assert!(m.data[8192..12288].iter().all(|&b| b == 3));
    }

    /// Staging pressure writes back what is staged before it stages the new write: a
    /// write that does not fit and overlaps a staged one reaches the media after it —
    /// written through past the staged one instead, the next write-back would put the
    /// older data over it (and a read would see the older data meanwhile).
    #[test]
    fn a_write_under_staging_pressure_lands_after_the_staged_ones() {
        let mut disk = [0u8; 16384];
        let mut sbuf = [0u8; 8192];
        let mut s = Stager::new(SliceMedia::new(&mut disk), &mut sbuf);
        s.write(0, 0, 0, &[1u8; 4096], 100).unwrap();
        s.write(0, 1, 8192, &[2u8; 4096], 100).unwrap();
        // The buffer is full: the third write, over the first, does not fit.
        s.write(0, 2, 0, &[3u8; 4096], 100).unwrap();
        assert_eq!(s.stats.pressure, 1);
        let mut r = [0u8; 4096];
        s.read(0, &mut r).unwrap();
        assert!(
            r.iter().all(|&b| b == 3),
            "a read after the third write returns older data"
        );
        s.sync().unwrap();
        let (m, _) = s.into_parts();
        assert!(
            m.data[..4096].iter().all(|&b| b == 3),
            "the older staged write reached the media after the newer one"
        );
        assert!(m.data[8192..12288].iter().all(|&b| b == 2));
    }

    #[test]
    fn contiguous_runs_are_written_back_as_one_media_write() {
        let mut disk = vec![0u8; 64 << 10];
        let mut sbuf = vec![0u8; 16 << 10];
        let mut s = Stager::new(SliceMedia::new(&mut disk), &mut sbuf);
        // A journal: three sequential blocks (one run), then a jump (a second run).
        for (i, off) in [(1u8, 0u64), (2, 4096), (3, 8192), (4, 32768)] {
            s.write(0, i as u64, off, &[i; 4096], 100).unwrap();
        }
        s.write_back().unwrap();
        assert_eq!((s.stats.written_back, s.stats.write_back_ios), (4, 2));
        assert_eq!(s.staged_bytes(), 0);
        // Descending offsets are contiguous in the buffer but not on the media.
        s.write(0, 5, 12288, &[5; 4096], 100).unwrap();
        s.write(0, 6, 8192, &[6; 4096], 100).unwrap();
        s.sync().unwrap();
        assert_eq!((s.stats.written_back, s.stats.write_back_ios), (6, 4));
        let (m, _) = s.into_parts();
        for (i, b) in [1u8, 2, 6, 5].iter().enumerate() {
            assert!(
                m.data[i * 4096..(i + 1) * 4096].iter().all(|x| x == b),
                "block {i}"
            );
        }
        assert!(m.data[32768..36864].iter().all(|&x| x == 4));
    }

    #[test]
    fn a_coalesced_write_is_at_most_max_coalesce_bytes() {
        let mut disk = vec![0u8; 4 << 20];
        let mut sbuf = vec![0u8; 2 << 20];
        let mut s = Stager::new(SliceMedia::new(&mut disk), &mut sbuf);
        let half = MAX_COALESCE / 2;
        for i in 0..3u8 {
            let off = i as u64 * half as u64;
            s.write(0, i as u64, off, &vec![i + 1; half], 100).unwrap();
        }
        s.sync().unwrap();
        assert_eq!((s.stats.written_back, s.stats.write_back_ios), (3, 2));
        let (m, _) = s.into_parts();
        for i in 0..3 {
            assert!(
                m.data[i * half..(i + 1) * half]
                    .iter()
                    .all(|&x| x == i as u8 + 1)
            );
        }
    }

    /// A staging-buffer swap writes back what the old buffer staged first: the staged
    /// data stays readable and reaches the media.
    #[test]
    fn swapping_the_staging_buffer_keeps_what_was_staged() {
        let mut disk = vec![0u8; 16384];
        let (mut old, mut new) = (vec![0u8; 8192], vec![0u8; 8192]);
        let mut s = Stager::new(SliceMedia::new(&mut disk), &mut old);
        s.write(0, 0, 4096, &[7u8; 4096], 100).unwrap();
        s.set_buffer(&mut new).unwrap();
        let mut r = [0u8; 4096];
        s.read(4096, &mut r).unwrap();
        assert!(r.iter().all(|&b| b == 7), "staged data lost in the swap");
        s.sync().unwrap();
        let (m, _) = s.into_parts();
        assert!(m.data[4096..8192].iter().all(|&b| b == 7));
    }

    /// WRITE_ZEROES / DISCARD are ordered after everything staged: an older staged
    /// write of the same range must not land on the media after the zeroes, and one of
    /// another range must still land.
    #[test]
    fn zeroes_are_ordered_after_older_staged_writes() {
        for discard in [false, true] {
            let mut disk = vec![0u8; 16384];
            let mut sbuf = vec![0u8; 8192];
            let mut s = Stager::new(SliceMedia::new(&mut disk), &mut sbuf);
            s.write(0, 0, 0, &[9u8; 4096], 100).unwrap();
            s.write(0, 1, 8192, &[5u8; 4096], 100).unwrap();
            s.zero(0, 2, 0, 4096, discard, 100).unwrap();
            s.sync().unwrap();
            let (m, _) = s.into_parts();
            assert!(
                m.data[..4096].iter().all(|&b| b == 0),
                "discard={discard}: the older staged write landed over the zeroes"
            );
            assert!(
                m.data[8192..12288].iter().all(|&b| b == 5),
                "discard={discard}: a write staged before the zeroes was lost"
            );
        }
    }

    #[test]
    fn policy_bounds() {
        let c = DurableConfig::default();
        assert_eq!(c.due(Intent::Critical, 0, 5), 5);
        assert_eq!(c.due(Intent::Standard, 0, 0), 5_000_000);
        assert_eq!(c.due(Intent::Standard, 2000, 0), 1_000_000);
        assert_eq!(c.due(Intent::Standard, 1_000_000, 0), 5_000_000);
        assert_eq!(c.due(Intent::Ephemeral, 1, 0), 100_000_000);
    }
}
