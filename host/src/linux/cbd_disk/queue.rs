//! [`CbdQueue`]: one ublk queue over one CBD channel: starting requests (FUA and flush mapped
//! to tokens or plain v3), finishing them, the token flush's wait on the watermarks, and the
//! liveness checks while waiting.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::engine::{Completion, HostError, Intent, Request};
use device::layout::{STATE_RUNNING, chan, op};
use device::transport::{Transport, is_alive};

use super::record::{FLUSH_CHANNEL, digests_if, kind_of};
use super::{
    ChanRef, Clock, FLUSH_WAIT_SLEEP, LIVENESS_CHECK_NS, LIVENESS_CHECK_POLLS, Shared, lock,
};
use crate::linux::disk::{Errno, MAX_DISCARD_BYTES, Op, QueueIo, Req, Sink};
use crate::linux::mem::MappedMem;
use history::{OpId, OpKind, Outcome};

/// One ublk queue = one CBD channel.
pub struct CbdQueue {
    idx: usize,
    shared: Arc<Shared>,
    tp: Transport<'static, MappedMem>,
    backend_id: u32,
    clock: Clock,
    read_buf: Vec<u8>,
    /// Started requests by CBD tid: the ublk tag, and whether a FUA write still needs its
    /// FLUSH (false once the FLUSH itself is in flight).
    inflight: std::collections::HashMap<u64, Started>,
    /// Completions taken while starting (a full ring): tag, result, READ data.
    early: Vec<(u16, Result<(), Errno>, Vec<u8>)>,
    /// Token flushes started: the tag, the snapshot to wait for, its history op.
    flushes: Vec<(u16, FlushSnap, Option<OpId>)>,
    /// `--history`: the op of each submitted tid whose completion was not recorded yet
    /// (kept when this host fails the request itself: the CE may still come).
    hist_ids: std::collections::HashMap<u64, OpId>,
    /// Token flushes recorded so far (their tids on the pseudo-channel).
    hist_flushes: u64,
}

/// What a token flush waits for: per channel, the end (max tid + 1) of the writes completed
/// when it arrived; and the sum of lost tokens already reported then.
#[derive(Clone, Debug)]
struct FlushSnap {
    ends: Vec<u64>,
    reported: u64,
}

#[derive(Clone, Copy, Debug)]
struct Started {
    tag: u16,
    op: Op,
    fua_flush_pending: bool,
}

fn is_write(code: u32) -> bool {
    matches!(code, op::WRITE | op::WRITE_ZEROES | op::DISCARD)
}

impl CbdQueue {
    pub(super) fn new(
        idx: usize,
        shared: Arc<Shared>,
        tp: Transport<'static, MappedMem>,
        backend_id: u32,
        clock: Clock,
    ) -> CbdQueue {
        CbdQueue {
            idx,
            shared,
            tp,
            backend_id,
            clock,
            read_buf: vec![0; chan::MAX_IO as usize],
            inflight: std::collections::HashMap::new(),
            early: Vec::new(),
            flushes: Vec::new(),
            hist_ids: std::collections::HashMap::new(),
            hist_flushes: 0,
        }
    }

    fn me(&self) -> &ChanRef {
        &self.shared.chans[self.idx]
    }

    fn backend_alive(&self, now: u64) -> bool {
        match self.tp.backend(self.backend_id) {
            Ok(Some(b)) => b.rec.state == STATE_RUNNING && is_alive(b.rec.alive_ts, now),
            _ => false,
        }
    }

    fn check_alive(&self, next_check: &mut u64, polls: &mut u32) -> Result<(), Errno> {
        let now = (self.clock)();
        *polls += 1;
        if now >= *next_check || *polls >= LIVENESS_CHECK_POLLS {
            *next_check = now + LIVENESS_CHECK_NS;
            *polls = 0;
            if !self.backend_alive(now) {
                log::error!(
                    "backend {} is dead or stopped; failing the request",
                    self.backend_id
                );
                return Err(Errno(libc::EIO));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Polls this channel for one completion (READ data lands in `read_buf`).
    fn poll_one(&mut self) -> Result<Option<Completion>, HostError> {
        let now = (self.clock)();
        let chan = Arc::clone(self.me());
        let mut g = lock(&chan);
        let c = g.q.poll_at(&mut self.read_buf, now)?;
        if let Some(c) = c
            && c.result == 0
            && is_write(c.req.op)
        {
            g.write_end = g.write_end.max(c.req_tid + 1);
        }
        if let (Some(c), Some(h)) = (c, &self.shared.history) {
            // A new incarnation is recorded before its first completion.
            if self.shared.tokens
                && let Err(e) = self.shared.poll_durable(self.idx, &mut g, now)
            {
                log::debug!("history: poll_durable: {e:?}");
            }
            match self.hist_ids.remove(&c.req_tid) {
                Some(id) => {
                    let (outcome, read) = if c.result == 0 {
                        let data = &self.read_buf[..c.req.len as usize];
                        let read = if c.req.op == op::READ {
                            history::digests(data)
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
        Ok(c)
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
    fn on_completion(&mut self, c: Completion, sink: &mut Sink<'_>) -> Result<(), Errno> {
        let Some(st) = self.inflight.remove(&c.req_tid) else {
            log::warn!("completion for unknown tid {}", c.req_tid);
            return Ok(());
        };
        if c.result < 0 {
            self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            sink(st.tag, Err(Errno(-c.result)), &[]);
            return Ok(());
        }
        if st.fua_flush_pending {
            let flush = Request {
                op: op::FLUSH,
                offset: 0,
                len: 0,
            };
            let tid = self.submit_blocking(flush, &[], Intent::Standard, sink)?;
            self.inflight.insert(
                tid,
                Started {
                    fua_flush_pending: false,
                    ..st
                },
            );
            return Ok(());
        }
        let len = c.req.len as usize;
        let data: &[u8] = if st.op == Op::Read {
            &self.read_buf[..len]
        } else {
            &[]
        };
        sink(st.tag, Ok(()), data);
        Ok(())
    }

    /// Submits, polling completions (into `sink`) while the channel is full.
    fn submit_blocking(
        &mut self,
        r: Request,
        payload: &[u8],
        intent: Intent,
        sink: &mut Sink<'_>,
    ) -> Result<u64, Errno> {
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        let written = digests_if(self.shared.history.as_ref(), payload);
        loop {
            // Stamped before the backend can see the request.
            let stamp = self.shared.history.as_ref().map(|h| h.log.tick());
            let res = lock(self.me()).q.submit_intent(r, payload, intent);
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
                    Ok(Some(c)) => self.on_completion(c, sink)?,
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
        FlushSnap { ends, reported }
    }

    /// Waits until, on every channel, every write below the snapshot's end is durable: the
    /// watermark reached it (or nothing completed is unconfirmed). `EIO` if the backend died,
    /// or if it lost completed writes (new incarnation) that no flush had reported when this
    /// one arrived: every flush that arrived before the loss was reported fails, not only the
    /// first to notice (a second one in flight would otherwise vouch for the lost writes).
    fn wait_durable(&self, snap: &FlushSnap) -> Result<(), Errno> {
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        loop {
            let now = (self.clock)();
            let mut done = true;
            let mut lost = 0u64;
            for (i, (c, &end)) in self.shared.chans.iter().zip(&snap.ends).enumerate() {
                let mut g = lock(c);
                if let Err(e) = self.shared.poll_durable(i, &mut g, now) {
                    log::error!("flush: reading the watermark: {e:?}");
                    return Err(Errno(libc::EIO));
                }
                if !g.q.is_ready() {
                    log::error!("flush: channel {} is not ready", g.q.idx);
                    return Err(Errno(libc::EIO));
                }
                lost += g.q.tokens.lost;
                done &= g.q.tokens.watermark >= end || g.q.all_completed_durable();
            }
            {
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
                    return Err(Errno(libc::EIO));
                }
            }
            if done {
                return Ok(());
            }
            self.check_alive(&mut next_check, &mut polls)?;
            std::thread::sleep(FLUSH_WAIT_SLEEP);
        }
    }
}

impl QueueIo for CbdQueue {
    fn submit(&mut self, req: &Req, buf: &mut [u8]) -> Result<(), Errno> {
        const TAG: u16 = u16::MAX;
        if let Some(r) = self.start(TAG, req, buf) {
            return r;
        }
        let mut res = Err(Errno(libc::EIO));
        self.finish(&mut |t, r, d| {
            if t == TAG {
                if r.is_ok() && !d.is_empty() {
                    buf[..d.len()].copy_from_slice(d);
                }
                res = r;
            }
        });
        res
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
        // Completions that arrive while waiting for room are kept for `finish` (with a copy of
        // their READ data: the sink that owns the buffers is not available here).
        let mut early = std::mem::take(&mut self.early);
        let res = self.submit_blocking(Self::to_request(req), payload, intent, &mut |t, r, d| {
            early.push((t, r, d.to_vec()))
        });
        self.early = early;
        match res {
            Ok(tid) => {
                if critical {
                    self.shared.critical_writes.fetch_add(1, Ordering::Relaxed);
                }
                self.inflight.insert(
                    tid,
                    Started {
                        tag,
                        op: req.op,
                        fua_flush_pending: fua && !critical,
                    },
                );
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    fn finish(&mut self, sink: &mut Sink<'_>) {
        for (t, r, d) in std::mem::take(&mut self.early) {
            sink(t, r, &d);
        }
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        while !self.inflight.is_empty() {
            let step = match self.poll_one() {
                Ok(Some(c)) => self.on_completion(c, sink),
                Ok(None) => {
                    std::hint::spin_loop();
                    self.check_alive(&mut next_check, &mut polls)
                }
                Err(e) => {
                    log::error!("poll: {e:?}");
                    Err(Errno(libc::EIO))
                }
            };
            if step.is_err() {
                self.fail_all(sink);
            }
        }
        for (tag, snap, id) in std::mem::take(&mut self.flushes) {
            let r = self.wait_durable(&snap);
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
}
