//! [`CbdQueue`]: one ublk queue over one CBD channel: starting requests (FUA and flush mapped
//! to tokens or plain v3), finishing them, the token flush's wait on the watermarks, and the
//! liveness checks while waiting.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::engine::{Completion, HostError, Intent, Request};
use device::layout::{chan, op};

use super::liveness::{DEAD_AFTER_NS, Verdict};
use super::record::{FLUSH_CHANNEL, digests_if, kind_of};
use super::replay::{Content, ReplayJob};
use super::{
    ChanRef, Clock, FLUSH_WAIT_SLEEP, LIVENESS_CHECK_NS, LIVENESS_CHECK_POLLS, Shared, lock,
    lock_replay,
};
use crate::linux::disk::{Errno, MAX_DISCARD_BYTES, Op, QueueIo, Req, Sink};
use history::{OpId, OpKind, Outcome};

/// One ublk queue = one CBD channel.
pub struct CbdQueue {
    idx: usize,
    shared: Arc<Shared>,
    clock: Clock,
    /// Where the engine copies a batch's READ data, one completion at a time.
    read_buf: Vec<u8>,
    /// Completions of this channel taken in a poll's batch and not dispatched yet, in ring
    /// order (the post-processing under the channel's lock done).
    taken: std::collections::VecDeque<Taken>,
    /// READ data buffers of dispatched completions, for the next batch.
    spare: Vec<Vec<u8>>,
    /// Started requests by CBD tid: the ublk tag, and whether a FUA write still needs its
    /// FLUSH (false once the FLUSH itself is in flight).
    inflight: std::collections::HashMap<u64, Started>,
    /// Completions taken while starting (a full ring): tag, result, READ data.
    early: Vec<(u16, Result<(), Errno>, Vec<u8>)>,
    /// Token flushes started: the tag, the snapshot to wait for, its history op.
    flushes: Vec<(u16, FlushSnap, Option<OpId>)>,
    /// When (host clock) `poll` looks at the watermarks for `flushes` next; 0: at once.
    next_flush_look: u64,
    /// While `poll` has requests waiting: its next liveness check and empty polls so far.
    wait_polls: Option<(u64, u32)>,
    /// `--history`: the op of each submitted tid whose completion was not recorded yet
    /// (kept when this host fails the request itself: the CE may still come).
    hist_ids: std::collections::HashMap<u64, OpId>,
    /// Token flushes recorded so far (their tids on the pseudo-channel).
    hist_flushes: u64,
    /// Replays in flight on this channel, by CBD tid.
    replays: std::collections::HashMap<u64, ReplayJob>,
    /// The shared restart count this queue last helped replay for.
    replay_gen: u64,
    /// The restart count up to which this queue made every channel look at its line.
    synced_gen: u64,
    /// Last completion (host clock), and whether a stalled ring was reported since.
    last_progress: u64,
    stall_logged: bool,
}

/// A completion taken in a poll's batch ([`CbdQueue::poll_batch`]), waiting for
/// [`CbdQueue::dispatch`].
struct Taken {
    c: Completion,
    /// A READ the device completed OK: its data, with the replay buffer's overlay laid over;
    /// empty for any other completion.
    data: Vec<u8>,
    /// A READ completed across a restart the host saw only then: sent again, not reported.
    retry: bool,
}

/// READ data buffers kept for later batches: at most this many, of any size up to a
/// request's largest (`chan::MAX_IO`). Large ones are kept too: a freed 512 KiB buffer
/// goes back to the kernel (glibc's mmap threshold), and the next large READ would fault
/// its pages in again, which under TCG cost more than the copy (1 MiB reads at QD4 ran at
/// a third of their rate with large buffers freed: docs/throughput.md).
const SPARE_BUFS: usize = 16;
const SPARE_BYTES: usize = chan::MAX_IO as usize;

/// A submitted request: its tid, for a READ the replay buffer's overlay and the restart count.
type Submitted = (u64, Vec<(usize, Vec<u8>)>, u64);

/// Pieces one queue takes for replay at a time.
const REPLAY_BATCH: usize = 32;

/// What a token flush waits for: per channel, the end (max tid + 1) of the writes completed
/// when it arrived; and the sum of lost tokens already reported then.
#[derive(Clone, Debug)]
struct FlushSnap {
    ends: Vec<u64>,
    reported: u64,
    /// With a replay buffer: its sequence when the flush arrived (it owes what is below).
    seq: Option<u64>,
}

#[derive(Clone, Debug)]
struct Started {
    tag: u16,
    op: Op,
    fua_flush_pending: bool,
    /// READ: what the replay buffer held over its bytes when it was submitted (newer than
    /// what a restarted backend may return until the replay lands).
    overlay: Vec<(usize, Vec<u8>)>,
    /// READ: the restart count when it was submitted (a restart seen before it completed
    /// may have been served by the new backend before the replay: it is sent again).
    restart_gen: u64,
}

fn is_write(code: u32) -> bool {
    matches!(code, op::WRITE | op::WRITE_ZEROES | op::DISCARD)
}

impl CbdQueue {
    pub(super) fn new(idx: usize, shared: Arc<Shared>, clock: Clock) -> CbdQueue {
        CbdQueue {
            idx,
            shared,
            clock,
            read_buf: vec![0; chan::MAX_IO as usize],
            taken: std::collections::VecDeque::new(),
            spare: Vec::new(),
            inflight: std::collections::HashMap::new(),
            early: Vec::new(),
            flushes: Vec::new(),
            next_flush_look: 0,
            wait_polls: None,
            hist_ids: std::collections::HashMap::new(),
            hist_flushes: 0,
            replays: std::collections::HashMap::new(),
            replay_gen: 0,
            synced_gen: 0,
            last_progress: 0,
            stall_logged: false,
        }
    }

    fn me(&self) -> &ChanRef {
        &self.shared.chans[self.idx]
    }

    /// While waiting: every [`LIVENESS_CHECK_NS`] (or [`LIVENESS_CHECK_POLLS`] calls) look at
    /// the backend. Down: keep holding (the requests stay in the ring for the backend's
    /// return); down for longer than `--recover-timeout`: `EIO`.
    fn check_alive(&mut self, next_check: &mut u64, polls: &mut u32) -> Result<(), Errno> {
        let now = (self.clock)();
        *polls += 1;
        if now >= *next_check || *polls >= LIVENESS_CHECK_POLLS {
            *next_check = now + LIVENESS_CHECK_NS;
            *polls = 0;
            let v = self.shared.observe(now);
            if v == Verdict::Failed {
                return Err(Errno(libc::EIO));
            }
            let waiting = self.inflight.len() + self.replays.len();
            if v == Verdict::Up
                && waiting > 0
                && !self.stall_logged
                && now.saturating_sub(self.last_progress) > DEAD_AFTER_NS
            {
                self.stall_logged = true;
                log::warn!(
                    "channel {}: {waiting} request(s) in flight and no completion for {} s while the backend's heartbeat is fresh (stalled ring); holding them",
                    self.idx,
                    now.saturating_sub(self.last_progress) / 1_000_000_000
                );
            }
            if v == Verdict::Holding {
                std::thread::sleep(Duration::from_millis(1));
            } else {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// A completion from [`CbdQueue::poll_one`]: a replay's goes to the replay buffer,
    /// everything else to [`CbdQueue::on_completion`].
    fn dispatch(&mut self, t: Taken, sink: &mut Sink<'_>) -> Result<(), Errno> {
        let c = t.c;
        self.last_progress = (self.clock)();
        self.stall_logged = false;
        let rp = self.shared.replay.as_ref();
        if let Some(job) = self.replays.remove(&c.req_tid) {
            if c.result != 0 {
                log::error!(
                    "replay of {} byte(s) at {} failed ({}); the flushes that owe it fail",
                    job.len,
                    job.offset,
                    c.result
                );
            }
            if let Some(r) = rp {
                lock_replay(r).replay_done(&job, c.result == 0, c.durable);
            }
            self.recycle(t.data);
            return Ok(());
        }
        if let Some(r) = rp
            && is_write(c.req.op)
        {
            lock_replay(r).completed(self.idx as u16, c.req_tid, c.result == 0, c.durable);
        }
        self.on_completion(t, sink)
    }

    /// Keeps a dispatched completion's READ data buffer for a later batch.
    fn recycle(&mut self, mut data: Vec<u8>) {
        if data.capacity() > 0 && data.capacity() <= SPARE_BYTES && self.spare.len() < SPARE_BUFS {
            data.clear();
            self.spare.push(data);
        }
    }

    /// Look at every channel's durability line (channels busy in another thread are skipped).
    fn poll_all_durable(&self) {
        let now = (self.clock)();
        for (i, c) in self.shared.chans.iter().enumerate() {
            if let Ok(mut g) = c.try_lock()
                && let Err(e) = self.shared.poll_durable(i, &mut g, now)
            {
                log::debug!("watermark: {e:?}");
            }
        }
    }

    /// Replay what the backend lost: take pieces that need it (their channel saw a restart
    /// after they were submitted), submit them on this channel, wait until they completed.
    /// Cheap when nothing restarted since this queue last looked.
    fn help_replay(&mut self, sink: &mut Sink<'_>) -> Result<(), Errno> {
        let shared = Arc::clone(&self.shared);
        let Some(rp) = shared.replay.as_ref() else {
            return Ok(());
        };
        loop {
            let generation = shared.restart_gen.load(Ordering::Acquire);
            if generation == self.replay_gen {
                return Ok(());
            }
            let lbs = shared.lost_below_now();
            let Some(jobs) = lock_replay(rp).take_jobs(&lbs, REPLAY_BATCH) else {
                // A write admitted before the restart was seen is on its way: later.
                return Ok(());
            };
            if jobs.is_empty() {
                self.replay_gen = generation;
                return Ok(());
            }
            let n = jobs.len();
            log::debug!("channel {}: replaying {n} piece(s)", self.idx);
            let mut jobs = jobs.into_iter();
            while let Some(job) = jobs.next() {
                if let Err(e) = self.submit_replay(job, sink) {
                    let mut r = lock_replay(rp);
                    for j in jobs {
                        r.replay_done(&j, false, false);
                    }
                    return Err(e);
                }
            }
            self.drain_replays(sink)?;
        }
    }

    fn submit_replay(&mut self, job: ReplayJob, sink: &mut Sink<'_>) -> Result<(), Errno> {
        let shared = Arc::clone(&self.shared);
        let Some(rp) = shared.replay.as_ref() else {
            return Ok(());
        };
        let (code, payload): (u32, &[u8]) = match &job.content {
            Content::Data(d) => (op::WRITE, d),
            Content::Zeroes => (op::WRITE_ZEROES, &[]),
            Content::Discard => (op::DISCARD, &[]),
        };
        let r = Request {
            op: code,
            offset: job.offset,
            len: job.len,
        };
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        loop {
            let res = {
                let mut g = lock(self.me());
                let res = g.q.submit_intent(r, payload, Intent::Standard);
                if let Ok(t) = res {
                    lock_replay(rp).replayed(&job, self.idx as u16, t);
                }
                res
            };
            let step = match res {
                Ok(t) => {
                    self.replays.insert(t, job);
                    return Ok(());
                }
                Err(HostError::Busy) => match self.poll_one() {
                    Ok(Some(c)) => self.dispatch(c, sink),
                    Ok(None) => self.check_alive(&mut next_check, &mut polls),
                    Err(e) => {
                        log::error!("poll: {e:?}");
                        Err(Errno(libc::EIO))
                    }
                },
                Err(e) => {
                    log::error!("replay {r:?}: {e:?}");
                    Err(Errno(libc::EIO))
                }
            };
            if let Err(e) = step {
                lock_replay(rp).replay_done(&job, false, false);
                return Err(e);
            }
        }
    }

    /// Waits until this channel's replays completed.
    fn drain_replays(&mut self, sink: &mut Sink<'_>) -> Result<(), Errno> {
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        while !self.replays.is_empty() {
            let step = match self.poll_one() {
                Ok(Some(c)) => self.dispatch(c, sink),
                Ok(None) => self.check_alive(&mut next_check, &mut polls),
                Err(e) => {
                    log::error!("poll: {e:?}");
                    Err(Errno(libc::EIO))
                }
            };
            if let Err(e) = step {
                if let Some(r) = self.shared.replay.as_ref() {
                    let mut r = lock_replay(r);
                    for (_, j) in self.replays.drain() {
                        r.replay_done(&j, false, false);
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Before a modifying request of `bytes` data: room in the replay buffer, and no replay
    /// in flight anywhere (a replay landing after a newer write over the same bytes would
    /// undo it). Meanwhile: replay, take completions, look at the watermarks.
    fn wait_for_room(&mut self, bytes: usize, sink: &mut Sink<'_>) -> Result<(), Errno> {
        let shared = Arc::clone(&self.shared);
        let Some(rp) = shared.replay.as_ref() else {
            return Ok(());
        };
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        let mut waited = false;
        loop {
            self.help_replay(sink)?;
            {
                let lbs = shared.lost_below_now();
                let mut r = lock_replay(rp);
                if r.reserve(bytes, &lbs) {
                    return Ok(());
                }
                if !waited && r.in_flight == 0 {
                    log::debug!(
                        "replay buffer full ({} of {} bytes held): waiting for durability",
                        r.used(),
                        r.capacity()
                    );
                }
            }
            waited = true;
            match self.poll_one() {
                Ok(Some(c)) => {
                    self.dispatch(c, sink)?;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    log::error!("poll: {e:?}");
                    return Err(Errno(libc::EIO));
                }
            }
            self.poll_all_durable();
            self.check_alive(&mut next_check, &mut polls)?;
            std::thread::sleep(FLUSH_WAIT_SLEEP);
        }
    }

    /// This channel's next completion: the oldest one an earlier poll's batch took and that
    /// is not dispatched yet, else the first of a new batch ([`CbdQueue::poll_batch`]).
    fn poll_one(&mut self) -> Result<Option<Taken>, HostError> {
        if self.taken.is_empty() {
            self.poll_batch()?;
        }
        Ok(self.taken.pop_front())
    }

    /// One poll of this channel (`HostQueue::poll_batch_at`): every CE the device's head
    /// shows, appended to `taken` in ring order, with what each needs under the channel's
    /// lock done before the lock is released: the end of the completed writes, a READ's
    /// check for a restart (sent again) or its overlay, the history. Dispatching them needs
    /// the lock again (a FUA write's FLUSH, a READ sent again), so it waits for the caller.
    /// Returns how many it took.
    fn poll_batch(&mut self) -> Result<usize, HostError> {
        let now = (self.clock)();
        let chan = Arc::clone(self.me());
        let mut g = lock(&chan);
        let from = self.taken.len();
        let (taken, spare) = (&mut self.taken, &mut self.spare);
        // The READ data is in `read_buf` only during the call: copied out.
        let n = g.q.poll_batch_at(&mut self.read_buf, now, &mut |c, d| {
            let mut data = Vec::new();
            if !d.is_empty() {
                data = spare.pop().unwrap_or_default();
                data.extend_from_slice(d);
            }
            taken.push_back(Taken {
                c: *c,
                data,
                retry: false,
            });
        })?;
        if n == 0 {
            return Ok(0);
        }
        for t in self.taken.range(from..) {
            if t.c.result == 0 && is_write(t.c.req.op) {
                g.write_end = g.write_end.max(t.c.req_tid + 1);
            }
        }
        let replay = self.shared.replay.is_some();
        let checked = |t: &Taken| t.c.req.op == op::READ && t.c.result == 0 && replay;
        if self
            .taken
            .range(from..)
            .any(|t| checked(t) && self.inflight.contains_key(&t.c.req_tid))
        {
            // A restart before one of these READs ran shows on this channel's line: looked
            // at now (after every CE of the batch was taken), so that such a READ is sent
            // again (`on_completion`) rather than return lost data.
            if let Err(e) = self.shared.poll_durable(self.idx, &mut g, now) {
                log::debug!("read: poll_durable: {e:?}");
            }
            let generation = self.shared.restart_gen.load(Ordering::Acquire);
            for t in self.taken.range_mut(from..) {
                if !checked(t) {
                    continue;
                }
                let Some(st) = self.inflight.get(&t.c.req_tid) else {
                    continue;
                };
                t.retry = generation != st.restart_gen;
                if !t.retry {
                    for (o, b) in &st.overlay {
                        if let Some(dst) = t.data.get_mut(*o..*o + b.len()) {
                            dst.copy_from_slice(b);
                        }
                    }
                }
            }
        }
        if let Some(h) = &self.shared.history {
            // A new incarnation is recorded before its first completion.
            if self.shared.tokens
                && let Err(e) = self.shared.poll_durable(self.idx, &mut g, now)
            {
                log::debug!("history: poll_durable: {e:?}");
            }
            for t in self.taken.range(from..) {
                let c = &t.c;
                match self.hist_ids.remove(&c.req_tid) {
                    Some(id) => {
                        let (outcome, read) = if t.retry {
                            // Not what the caller gets: it is read again.
                            (Outcome::Err(libc::EAGAIN), Vec::new())
                        } else if c.result == 0 {
                            let read = if c.req.op == op::READ {
                                history::digests(&t.data)
                            } else {
                                Vec::new()
                            };
                            (Outcome::Ok, read)
                        } else {
                            (Outcome::Err(-c.result), Vec::new())
                        };
                        h.log.complete(
                            id,
                            kind_of(c.req.op),
                            outcome,
                            read,
                            c.durable && c.result == 0,
                        );
                    }
                    None => log::warn!("history: completion of unrecorded tid {}", c.req_tid),
                }
            }
        }
        Ok(n)
    }

    fn to_request(req: &Req) -> Request {
        Request {
            op: match req.op {
                Op::Read => op::READ,
                Op::Write => op::WRITE,
                Op::Flush => op::FLUSH,
                Op::Discard => op::DISCARD,
                Op::WriteZeroes => op::WRITE_ZEROES,
            },
            offset: req.offset,
            len: req.len,
        }
    }

    /// Handles one completion of a started request: a FUA write gets its FLUSH; everything
    /// else is reported through `sink`.
    fn on_completion(&mut self, t: Taken, sink: &mut Sink<'_>) -> Result<(), Errno> {
        let Taken { c, data, retry } = t;
        let Some(st) = self.inflight.remove(&c.req_tid) else {
            log::warn!("completion for unknown tid {}", c.req_tid);
            self.recycle(data);
            return Ok(());
        };
        if c.result < 0 {
            self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            sink(st.tag, Err(Errno(-c.result)), &[]);
            self.recycle(data);
            return Ok(());
        }
        if st.fua_flush_pending {
            self.recycle(data);
            let flush = Request {
                op: op::FLUSH,
                offset: 0,
                len: 0,
            };
            let tid = self.submit_blocking(flush, &[], Intent::Standard, None, sink)?;
            self.inflight.insert(
                tid,
                Started {
                    fua_flush_pending: false,
                    ..st
                },
            );
            return Ok(());
        }
        if retry {
            self.recycle(data);
            let (tid, overlay, restart_gen) = self.submit_read(c.req, sink)?;
            self.inflight.insert(
                tid,
                Started {
                    overlay,
                    restart_gen,
                    ..st
                },
            );
            return Ok(());
        }
        let d: &[u8] = if st.op == Op::Read { &data } else { &[] };
        sink(st.tag, Ok(()), d);
        self.recycle(data);
        Ok(())
    }

    /// Submits, polling completions (into `sink`) while the channel is full.
    /// `keep`: what the replay buffer keeps of it (a modifying request with a replay buffer;
    /// its room was reserved), entered under the channel's lock as the request is submitted.
    fn submit_blocking(
        &mut self,
        r: Request,
        payload: &[u8],
        intent: Intent,
        mut keep: Option<Content>,
        sink: &mut Sink<'_>,
    ) -> Result<u64, Errno> {
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        let written = digests_if(self.shared.history.as_ref(), payload);
        loop {
            // Stamped before the backend can see the request.
            let stamp = self.shared.history.as_ref().map(|h| h.log.tick());
            let res = {
                let mut g = lock(self.me());
                let res = g.q.submit_intent(r, payload, intent);
                if let (Ok(t), Some(rp)) = (&res, self.shared.replay.as_ref())
                    && let Some(k) = keep.take()
                {
                    lock_replay(rp).insert(self.idx as u16, *t, r.offset, k, r.len);
                }
                res
            };
            match res {
                Ok(t) => {
                    if r.op == op::FLUSH {
                        self.shared.cbd_flushes_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    if let (Some(h), Some(at)) = (&self.shared.history, stamp) {
                        let (kind, off, len) = (kind_of(r.op), r.offset, r.len);
                        let id = h
                            .log
                            .invoke(at, self.idx as u16, t, kind, off, len, written);
                        self.hist_ids.insert(t, id);
                    }
                    return Ok(t);
                }
                Err(HostError::Busy) => match self.poll_one() {
                    Ok(Some(c)) => self.dispatch(c, sink)?,
                    Ok(None) => self.check_alive(&mut next_check, &mut polls)?,
                    Err(e) => {
                        log::error!("poll: {e:?}");
                        return Err(Errno(libc::EIO));
                    }
                },
                Err(e) => {
                    log::error!("submit {r:?}: {e:?}");
                    return Err(Errno(libc::EIO));
                }
            }
        }
    }

    /// Submits `req` (not a token flush) with the replay buffer's part: a READ takes what the
    /// buffer holds over its bytes; a modifying request waits for room and is kept.
    fn start_io(
        &mut self,
        req: &Req,
        payload: &[u8],
        intent: Intent,
        sink: &mut Sink<'_>,
    ) -> Result<Submitted, Errno> {
        let shared = Arc::clone(&self.shared);
        let r = Self::to_request(req);
        if req.op == Op::Read {
            return self.submit_read(r, sink);
        }
        let mut keep = None;
        if shared.replay.is_some() && is_write(r.op) {
            self.wait_for_room(payload.len(), sink)?;
            keep = Some(match req.op {
                Op::Write => Content::Data(payload.to_vec()),
                Op::Discard => Content::Discard,
                _ => Content::Zeroes,
            });
        }
        let kept = keep.is_some();
        match self.submit_blocking(r, payload, intent, keep, sink) {
            Ok(t) => Ok((t, Vec::new(), 0)),
            Err(e) => {
                if let (Some(rp), true) = (shared.replay.as_ref(), kept) {
                    lock_replay(rp).unreserve(payload.len());
                }
                Err(e)
            }
        }
    }

    /// Submits a READ with what the replay buffer holds of the bytes the backend may have
    /// lost, and the restart count it was submitted under (sampled first).
    fn submit_read(&mut self, r: Request, sink: &mut Sink<'_>) -> Result<Submitted, Errno> {
        let mut restart_gen = self.shared.restart_gen.load(Ordering::Acquire);
        if restart_gen != self.synced_gen && self.shared.replay.is_some() {
            // One channel saw a restart: the backend restarted for all of them. Make each
            // look at its line now, so that what the others lost is laid over this READ.
            let now = (self.clock)();
            for (i, c) in self.shared.chans.iter().enumerate() {
                if let Err(e) = self.shared.poll_durable(i, &mut lock(c), now) {
                    log::debug!("read: poll_durable: {e:?}");
                }
            }
            self.synced_gen = restart_gen;
            restart_gen = self.shared.restart_gen.load(Ordering::Acquire);
        }
        let overlay = match self.shared.replay.as_ref() {
            Some(rp) => {
                let lbs = self.shared.lost_below_now();
                lock_replay(rp).overlay(r.offset, r.len, &lbs)
            }
            None => Vec::new(),
        };
        let tid = self.submit_blocking(r, &[], Intent::Standard, None, sink)?;
        Ok((tid, overlay, restart_gen))
    }

    /// Fails everything in flight (dead backend / broken channel).
    fn fail_all(&mut self, sink: &mut Sink<'_>) {
        for (_, st) in self.inflight.drain() {
            self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            sink(st.tag, Err(Errno(libc::EIO)), &[]);
        }
    }

    /// A flush without a command: the end of the writes completed so far, per channel, and
    /// the losses already reported when it arrived.
    fn flush_snapshot(&self) -> FlushSnap {
        let reported = *self
            .shared
            .lost_reported
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ends = self
            .shared
            .chans
            .iter()
            .map(|c| lock(c).write_end)
            .collect();
        let seq = self.shared.replay.as_ref().map(|r| lock_replay(r).seq());
        FlushSnap {
            ends,
            reported,
            seq,
        }
    }

    /// Whether, on every channel, every write below the snapshot's end is durable: the
    /// watermark reached it (or nothing completed is unconfirmed); `None` while not yet.
    /// `EIO` if a channel broke, or if the backend lost completed writes (new incarnation)
    /// that no flush had reported when this one arrived: every flush that arrived before the
    /// loss was reported fails, not only the first to notice (a second one in flight would
    /// otherwise vouch for the lost writes).
    ///
    /// With a replay buffer, losses do not fail it: it is done once the buffer owes nothing
    /// from before its arrival (the lost writes replayed and durable in the new incarnation),
    /// helping with the replay meanwhile; only a replay that failed fails it.
    fn flush_verdict(
        &mut self,
        snap: &FlushSnap,
        sink: &mut Sink<'_>,
    ) -> Option<Result<(), Errno>> {
        let now = (self.clock)();
        let mut done = true;
        let mut lost = 0u64;
        for (i, (c, &end)) in self.shared.chans.iter().zip(&snap.ends).enumerate() {
            let mut g = lock(c);
            if let Err(e) = self.shared.poll_durable(i, &mut g, now) {
                log::error!("flush: reading the watermark: {e:?}");
                return Some(Err(Errno(libc::EIO)));
            }
            if !g.q.is_ready() {
                log::error!("flush: channel {} is not ready", g.q.idx);
                return Some(Err(Errno(libc::EIO)));
            }
            lost += g.q.tokens.lost;
            done &= g.q.tokens.watermark >= end || g.q.all_completed_durable();
        }
        if let (Some(rp), Some(seq)) = (self.shared.replay.as_ref(), snap.seq) {
            {
                let r = lock_replay(rp);
                if r.failed_for(seq) {
                    log::error!("flush: a replay it was owed failed; failing the flush");
                    return Some(Err(Errno(libc::EIO)));
                }
                if !r.owes(seq) {
                    return Some(Ok(()));
                }
            }
            return self.help_replay(sink).err().map(Err);
        }
        let mut rep = self
            .shared
            .lost_reported
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if lost > snap.reported {
            if lost > *rep {
                log::error!(
                    "flush: the backend lost {} completed write(s) (restarted); failing the flush",
                    lost - *rep
                );
                *rep = lost;
            }
            return Some(Err(Errno(libc::EIO)));
        }
        done.then_some(Ok(()))
    }

    /// Looks at the token flushes waiting (at once for a new one, else every
    /// [`FLUSH_WAIT_SLEEP`]) and reports those that are decided.
    fn look_at_flushes(&mut self, sink: &mut Sink<'_>) {
        let now = (self.clock)();
        if now < self.next_flush_look {
            return;
        }
        self.next_flush_look = now + FLUSH_WAIT_SLEEP.as_nanos() as u64;
        for (tag, snap, id) in std::mem::take(&mut self.flushes) {
            match self.flush_verdict(&snap, sink) {
                Some(r) => self.flush_done(tag, r, id, sink),
                None => self.flushes.push((tag, snap, id)),
            }
        }
    }

    /// Reports a token flush: the history, the counters, `sink`.
    fn flush_done(&self, tag: u16, r: Result<(), Errno>, id: Option<OpId>, sink: &mut Sink<'_>) {
        if let (Some(h), Some(id)) = (&self.shared.history, id) {
            let outcome = r.map_or_else(|e| Outcome::Err(e.0), |()| Outcome::Ok);
            h.log
                .complete(id, OpKind::Flush, outcome, Vec::new(), false);
        }
        match r {
            Ok(()) => {
                self.shared
                    .flushes_by_watermark
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        sink(tag, r, &[]);
    }
}

impl QueueIo for CbdQueue {
    fn submit(&mut self, req: &Req, buf: &mut [u8]) -> Result<(), Errno> {
        const TAG: u16 = u16::MAX;
        if let Some(r) = self.start(TAG, req, buf) {
            return r;
        }
        let mut res = None;
        while res.is_none() {
            let mut sink = |t: u16, r: Result<(), Errno>, d: &[u8]| {
                if t == TAG {
                    if r.is_ok() && !d.is_empty() {
                        buf[..d.len()].copy_from_slice(d);
                    }
                    res = Some(r);
                }
            };
            if self.poll(&mut sink) == 0 {
                break;
            }
        }
        res.unwrap_or(Err(Errno(libc::EIO)))
    }

    fn start(&mut self, tag: u16, req: &Req, buf: &mut [u8]) -> Option<Result<(), Errno>> {
        self.shared.stats.count(req);
        let len = req.len as usize;
        if matches!(req.op, Op::Read | Op::Write) && (len > buf.len() || req.len > chan::MAX_IO) {
            return Some(Err(Errno(libc::EINVAL)));
        }
        if matches!(req.op, Op::Discard | Op::WriteZeroes)
            && (!self.shared.discard_wz || req.len > MAX_DISCARD_BYTES)
        {
            // DISCARD / WRITE_ZEROES are our extension, not CBD v3: only if the backend offers
            // it (never with --plain-v3), at most the advertised size.
            return Some(Err(Errno(if self.shared.discard_wz {
                libc::EINVAL
            } else {
                libc::EOPNOTSUPP
            })));
        }
        if req.op == Op::Flush && self.shared.tokens {
            // No command: wait (in `finish`) for the watermarks to cover what completed so far.
            let stamp = self.shared.history.as_ref().map(|h| h.log.tick());
            let snap = self.flush_snapshot();
            let id = self.shared.history.as_ref().zip(stamp).map(|(h, at)| {
                self.hist_flushes += 1;
                let ch = FLUSH_CHANNEL + self.idx as u16;
                h.log
                    .invoke(at, ch, self.hist_flushes, OpKind::Flush, 0, 0, Vec::new())
            });
            self.flushes.push((tag, snap, id));
            // Looked at in the next poll, not after the next FLUSH_WAIT_SLEEP.
            self.next_flush_look = 0;
            return None;
        }
        let fua = req.fua && req.op == Op::Write;
        let critical = fua && self.shared.tokens;
        let intent = if critical {
            Intent::Critical
        } else if req.op == Op::Write {
            self.shared.default_intent
        } else {
            Intent::Standard
        };
        let payload: &[u8] = if req.op == Op::Write {
            &buf[..len]
        } else {
            &[]
        };
        // Completions that arrive while waiting for room are kept for the next `poll` (with a
        // copy of their READ data: the sink that owns the buffers is not available here).
        let mut early = std::mem::take(&mut self.early);
        let res = self.start_io(req, payload, intent, &mut |t, r, d| {
            early.push((t, r, d.to_vec()))
        });
        self.early = early;
        match res {
            Ok((tid, overlay, restart_gen)) => {
                if critical {
                    self.shared.critical_writes.fetch_add(1, Ordering::Relaxed);
                }
                self.inflight.insert(
                    tid,
                    Started {
                        tag,
                        op: req.op,
                        fua_flush_pending: fua && !critical,
                        overlay,
                        restart_gen,
                    },
                );
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    fn poll(&mut self, sink: &mut Sink<'_>) -> usize {
        for (t, r, d) in std::mem::take(&mut self.early) {
            sink(t, r, &d);
        }
        let mut progressed = false;
        // Every CE there is now: the device's head is read once per batch, and the batch's
        // completions are reported in ring order (with those an earlier batch left).
        while !self.inflight.is_empty() || !self.taken.is_empty() {
            let step = match self.poll_one() {
                Ok(Some(c)) => {
                    progressed = true;
                    self.dispatch(c, sink)
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!("poll: {e:?}");
                    Err(Errno(libc::EIO))
                }
            };
            if step.is_err() {
                self.fail_all(sink);
            }
        }
        if !self.flushes.is_empty() {
            if self.inflight.is_empty() && !progressed && self.next_flush_look != 0 {
                // Only flushes wait, on the device's watermark: no hot spin meanwhile.
                std::thread::sleep(FLUSH_WAIT_SLEEP);
            }
            self.look_at_flushes(sink);
        }
        let waiting = self.inflight.len() + self.flushes.len();
        if waiting == 0 {
            self.wait_polls = None;
        } else if !progressed {
            std::hint::spin_loop();
            let now = (self.clock)();
            let (mut next_check, mut polls) =
                self.wait_polls.unwrap_or((now + LIVENESS_CHECK_NS, 0));
            let alive = self.check_alive(&mut next_check, &mut polls);
            self.wait_polls = Some((next_check, polls));
            if alive.is_err() {
                self.fail_all(sink);
                for (tag, _, id) in std::mem::take(&mut self.flushes) {
                    self.flush_done(tag, alive, id, sink);
                }
            }
        }
        self.inflight.len() + self.flushes.len()
    }
}
