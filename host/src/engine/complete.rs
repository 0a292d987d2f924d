//! Completion: validate the CE, copy READ data out, mark the SE done, reclaim in order.
//!
//! Completions are taken in batches ([`HostQueue::poll_batch_at`]): every poll reads the
//! device's `compr_head` again (a head read at an earlier poll is never trusted), checks it
//! against the ring and against the requests in flight, invalidates (non-coherent mode) the
//! CEs from `compr_tail` up to it in one or, across the ring's end, two ranges with one full
//! fence, takes every CE of that span that verifies in one pass and publishes
//! `compr_tail`/`submr_tail` once, before it returns. The first CE of a poll is handled as
//! [`HostQueue::poll_at`] handles its one CE (re-reads, then `Stale`; v3: skipped as
//! `BadCompletion`); a later one that does not verify at its first read ends the batch, and
//! the next poll starts with it.

use device::channel::*;
use device::layout::*;
use device::shm::SharedMem;
use device::trace::{CopyDir, Pointer, Reject, TraceEvent};

use super::{Completion, HostError, HostQueue, MAX_DEPTH, QState};

/// What a read of the CE at `compr_tail` found.
enum Fetched {
    /// It verifies: the CE and its request's index in `inflight`.
    Ce(Ce, usize),
    /// v3 mode: it does not verify (rejected, traced); the caller skips it.
    Bad,
    /// A later CE of a batch that does not verify at its first read: the batch ends there.
    NotYet,
}

impl<M: SharedMem + ?Sized> HostQueue<'_, M> {
    /// Read the CE at `compr_tail` into private memory; validate it. `fresh`: the CE is in
    /// the span invalidated (and fenced) after this poll's read of the device's head, so its
    /// first read needs no invalidation of its own; every re-read does. `first`: the first CE
    /// of the poll, re-read up to `nc_retries` times (non-coherent) and rejected if it never
    /// verifies; a later one is read once (`NotYet` if it does not verify).
    fn fetch_ce(&self, fresh: bool, first: bool) -> Result<Fetched, HostError> {
        let shm = self.shm;
        let g = self.g;
        let n = g.el.ce_size as usize;
        let mut b = [0u8; MAX_CE_SIZE];
        let tries = if self.nc && first {
            self.cfg.nc_retries.max(1)
        } else {
            1
        };
        for try_no in 0..tries {
            let sab = self.cfg.sab();
            if self.nc && !sab.skip_ce_invalidate && !(fresh && try_no == 0) {
                shm.invalidate(g.ce(self.compr_tail), n as u64)?;
                if !sab.skip_ce_full_fence {
                    shm.full_fence();
                }
            }
            shm.read(g.ce(self.compr_tail), &mut b[..n])?;
            let Some(ce) = g.el.decode_ce(&b[..n]) else {
                break;
            };
            let slot = self
                .inflight
                .iter()
                .position(|f| f.tid == ce.req_tid && !f.done);
            let crc_ok = self.cfg.sab().skip_crc_check || g.el.entry_crc_ok(&b, g.el.ce_size);
            if crc_ok && let Some(i) = slot {
                return Ok(Fetched::Ce(ce, i));
            }
            if !first {
                return Ok(Fetched::NotYet);
            }
            if !self.nc {
                let why = if g.el.entry_crc_ok(&b, g.el.ce_size) {
                    Reject::Tid
                } else {
                    Reject::CeCrc
                };
                shm.tracer.event(&TraceEvent::Rejected {
                    chan: self.idx,
                    pos: self.compr_tail,
                    why,
                });
                return Ok(Fetched::Bad);
            }
        }
        if !first {
            return Ok(Fetched::NotYet);
        }
        shm.tracer.event(&TraceEvent::Rejected {
            chan: self.idx,
            pos: self.compr_tail,
            why: Reject::StaleAfterRetries,
        });
        Err(HostError::Stale)
    }

    /// Poll for one completion. READ data lands in `read_buf[..len]` (`read_buf`
    /// must hold the largest READ in flight; 1 MiB always suffices).
    pub fn poll(&mut self, read_buf: &mut [u8]) -> Result<Option<Completion>, HostError> {
        let now = self.now_ns;
        self.poll_at(read_buf, now)
    }

    /// [`HostQueue::poll`] with the current time (stamps token completions): a batch of at
    /// most one CE.
    pub fn poll_at(
        &mut self,
        read_buf: &mut [u8],
        now_ns: u64,
    ) -> Result<Option<Completion>, HostError> {
        let mut got = None;
        self.take_ces(read_buf, now_ns, 1, &mut |c, _| got = Some(*c))?;
        Ok(got)
    }

    /// Every completion the device's head shows at this poll, in one pass (module docs):
    /// `on` gets each, in ring order, with its READ data (`read_buf[..len]`, which `read_buf`
    /// must hold as for [`HostQueue::poll`]) if the device completed the READ OK (the
    /// completion's `result` says whether the data verified); empty for any other.
    /// Returns how many were taken. The tails are published before it returns, so nothing is
    /// submitted in between. An error is that of the poll's first CE (as
    /// [`HostQueue::poll_at`]'s); nothing was taken then.
    pub fn poll_batch_at(
        &mut self,
        read_buf: &mut [u8],
        now_ns: u64,
        on: &mut dyn FnMut(&Completion, &[u8]),
    ) -> Result<usize, HostError> {
        self.take_ces(read_buf, now_ns, MAX_DEPTH, on)
    }

    /// [`HostQueue::poll_batch_at`] at the time of the last poll.
    pub fn poll_batch(
        &mut self,
        read_buf: &mut [u8],
        on: &mut dyn FnMut(&Completion, &[u8]),
    ) -> Result<usize, HostError> {
        let now = self.now_ns;
        self.poll_batch_at(read_buf, now, on)
    }

    /// The device's `compr_head`, read now: `None` if it shows nothing new (non-coherent: its
    /// line does not verify or answers another epoch); `BadPointer` if it is not a CE position
    /// of the ring.
    fn read_compr_head(&self) -> Result<Option<u32>, HostError> {
        let (shm, g) = (self.shm, self.g);
        let compr_head = if self.nc {
            match read_dev_line(shm, &g, true)? {
                Some(d) if d.ack_epoch == self.epoch => d.compr_head,
                _ => return Ok(None),
            }
        } else {
            shm.load_u32(g.ctrl(ctrl::COMPR_HEAD))?
        };
        if !g.valid_ce_pos(compr_head) {
            return Err(HostError::BadPointer);
        }
        Ok((compr_head != self.compr_tail).then_some(compr_head))
    }

    /// CE slots in the ring: positions `0, ce_size, …` below `compr_size` (`next_ce`).
    fn ce_slots(&self) -> u32 {
        self.g.compr_size().div_ceil(self.g.el.ce_size)
    }

    /// CEs from `compr_tail` up to `head` (both valid positions), across the ring's end.
    fn ce_span(&self, head: u32) -> u32 {
        let ce = self.g.el.ce_size;
        let (tail, head) = (self.compr_tail / ce, head / ce);
        if head >= tail {
            head - tail
        } else {
            self.ce_slots() - tail + head
        }
    }

    /// Non-coherent mode: invalidates the `n` CE slots from `compr_tail` on (one range or,
    /// across the ring's end, two), then one full fence; true if it did.
    fn invalidate_ces(&self, n: u32) -> Result<bool, HostError> {
        let sab = self.cfg.sab();
        if !self.nc || sab.skip_ce_invalidate || n == 0 {
            return Ok(false);
        }
        let ce = self.g.el.ce_size as u64;
        let end = self.ce_slots() as u64 * ce;
        let from = self.compr_tail as u64;
        let len = n as u64 * ce;
        let first = len.min(end - from);
        self.shm.invalidate(self.g.ce(self.compr_tail), first)?;
        if len > first {
            self.shm.invalidate(self.g.ce(0), len - first)?;
        }
        if !sab.skip_ce_full_fence {
            self.shm.full_fence();
        }
        Ok(true)
    }

    /// One poll: the head read now, then at most `max` CEs up to it (module docs).
    fn take_ces(
        &mut self,
        read_buf: &mut [u8],
        now_ns: u64,
        max: usize,
        on: &mut dyn FnMut(&Completion, &[u8]),
    ) -> Result<usize, HostError> {
        self.now_ns = now_ns;
        if self.state != QState::Ready {
            return Ok(0);
        }
        let Some(head) = self.read_compr_head()? else {
            return Ok(0);
        };
        // Untrusted: a head claiming more CEs than requests wait for completion is taken
        // only up to that many (a batch never goes past what an honest device can have
        // posted); at least one CE is looked at, as one CE per poll always was.
        let waiting = self.inflight.iter().filter(|f| !f.done).count();
        let n = (self.ce_span(head) as usize).min(waiting).min(max).max(1);
        let fresh = self.invalidate_ces(n as u32)?;
        let mut taken = 0;
        let r = loop {
            if taken == n {
                break Ok(());
            }
            match self.take_ce(read_buf, fresh, taken == 0) {
                Ok(Some((c, len))) => {
                    on(&c, &read_buf[..len]);
                    taken += 1;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if taken > 0 {
            self.publish_tails()?;
        }
        r.map(|()| taken)
    }

    /// Publishes `compr_tail` and `submr_tail` (non-coherent mode: the host line, which
    /// carries both).
    fn publish_tails(&mut self) -> Result<(), HostError> {
        if self.nc {
            return self.publish_host_line();
        }
        let (shm, g) = (self.shm, self.g);
        shm.store_u32(g.ctrl(ctrl::COMPR_TAIL), self.compr_tail)?;
        shm.store_u32(g.ctrl(ctrl::SUBMR_TAIL), self.submr_tail)?;
        shm.tracer.event(&TraceEvent::PointerPublished {
            chan: self.idx,
            which: Pointer::ComprTail,
            value: self.compr_tail,
        });
        shm.tracer.event(&TraceEvent::PointerPublished {
            chan: self.idx,
            which: Pointer::SubmrTail,
            value: self.submr_tail,
        });
        Ok(())
    }

    /// Takes the CE at `compr_tail` (module docs; `fresh`, `first`: [`HostQueue::fetch_ce`]):
    /// the completion and the length of its READ data in `read_buf`, or `None` when a later
    /// CE of a batch does not verify yet. Moves `compr_tail`, not the published tails.
    fn take_ce(
        &mut self,
        read_buf: &mut [u8],
        fresh: bool,
        first: bool,
    ) -> Result<Option<(Completion, usize)>, HostError> {
        let shm = self.shm;
        let g = self.g;
        let pos = self.compr_tail;
        let (ce, i) = match self.fetch_ce(fresh, first)? {
            Fetched::Ce(ce, i) => (ce, i),
            Fetched::NotYet => return Ok(None),
            Fetched::Bad => {
                // Coherent mode: skip the bad CE so the queue keeps going.
                let mut b = [0u8; MAX_CE_SIZE];
                shm.read(g.ce(pos), &mut b[..g.el.ce_size as usize])?;
                let tid = g.el.decode_ce(&b).map_or(0, |c| c.req_tid);
                self.compr_tail = g.next_ce(pos);
                shm.store_u32(g.ctrl(ctrl::COMPR_TAIL), self.compr_tail)?;
                return Err(HostError::BadCompletion { req_tid: tid });
            }
        };
        let Some(&f) = self.inflight.iter().nth(i) else {
            return Err(HostError::Invalid);
        };
        let mut result = ce.result;
        let mut data_len = 0;
        if f.req.op == op::READ && result == 0 {
            let len = f.req.len as usize;
            if read_buf.len() < len {
                return if first {
                    Err(HostError::Invalid)
                } else {
                    Ok(None)
                };
            }
            let tries = if self.nc && first {
                self.cfg.nc_retries.max(1)
            } else {
                1
            };
            let mut ok = false;
            for _ in 0..tries {
                if self.nc {
                    data_cache_op(shm, &g, f.data_off, f.req.len, false)?;
                }
                copy_from_data(shm, &g, f.data_off, &mut read_buf[..len])?;
                if !g.el.data_crc
                    || self.cfg.sab().skip_crc_check
                    || payload_crc(&read_buf[..len]) == ce.data_crc
                {
                    ok = true;
                    break;
                }
            }
            if !ok && self.nc && !first {
                // Not landed yet: the next poll starts with this CE.
                return Ok(None);
            }
            shm.tracer.event(&TraceEvent::DataCopied {
                chan: self.idx,
                dir: CopyDir::FromShared,
                data_off: f.data_off,
                len: f.req.len,
            });
            if !ok {
                shm.tracer.event(&TraceEvent::Rejected {
                    chan: self.idx,
                    pos,
                    why: Reject::DataCrc,
                });
                if self.nc {
                    return Err(HostError::Stale);
                }
                result = errno::EBADMSG;
            }
            data_len = len;
        }
        shm.tracer.event(&TraceEvent::CeConsumed {
            chan: self.idx,
            pos,
            req_tid: ce.req_tid,
            result,
        });
        // DONE before compr_tail moves: a re-attaching v3 backend that sees the new
        // compr_tail also sees DONE, so nothing completes twice (non-coherent mode:
        // see `mark_done`).
        self.mark_done(f.pos)?;
        if let Some(x) = self.inflight.iter_mut().nth(i) {
            x.done = true;
        }
        self.compr_tail = g.next_ce(pos);
        // Reclaim SE ring and data area strictly in order.
        while let Some(front) = self.inflight.front() {
            if !front.done {
                break;
            }
            self.submr_tail = g.next_se(front.pos);
            self.data_tail += front.data_span as u64;
            self.inflight.pop_front();
        }
        self.stats.completed += 1;
        let mut durable = self.durable && ce.flags & CE_FLAG_DURABLE != 0;
        if result == 0 && f.req.op == op::FLUSH && !self.durable {
            durable = true;
        }
        if result == 0 {
            match f.req.op {
                op::WRITE | op::WRITE_ZEROES | op::DISCARD => {
                    durable |= self.durable && ce.req_tid < self.tokens.watermark;
                    self.token_completed(ce.req_tid, durable);
                }
                // v3: a completed FLUSH covers every write completed before it.
                op::FLUSH if durable => self.confirm_all(),
                _ => {}
            }
        }
        let c = Completion {
            req_tid: ce.req_tid,
            req: f.req,
            result,
            durable,
        };
        Ok(Some((c, data_len)))
    }

    /// Sets DONE in the SE at `pos` (and re-seals its CRC). The SE's bytes are read by copy and
    /// its two words stored individually; every one of those accesses is atomic in the shared
    /// region (`device::shm::raw`), so a backend scanning the entry meanwhile reads each word
    /// either old or new (never torn, never undefined behaviour); with entry CRCs a mix of old and
    /// new fails the check.
    fn mark_done(&mut self, pos: u32) -> Result<(), HostError> {
        let shm = self.shm;
        let g = self.g;
        let n = g.el.se_size as usize;
        let mut b = [0u8; MAX_SE_SIZE];
        shm.read(g.se(pos), &mut b[..n])?;
        let fo = g.el.se_flags_off as usize;
        let flags = get_u32(&b, fo) | SE_FLAG_DONE;
        put_u32(&mut b, fo, flags);
        shm.store_u32(g.se(pos) + fo as u64, flags)?;
        if g.el.se_crc {
            g.el.seal_se(&mut b);
            shm.store_u32(g.se(pos), get_u32(&b, 0))?;
        }
        // Non-coherent mode: not written back. There a re-attaching backend never needs
        // DONE: it resumes at the published `submr_tail`, which (completions are in order,
        // and `compr_tail` and `submr_tail` are published together in one line) is past
        // every SE whose CE that line consumed, and it skips up to the tid of the last
        // published CE the host has not consumed yet (`skip_upto`).
        Ok(())
    }
}

// Little-endian words of an entry image (`device::layout`'s helpers are crate-private).
fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
