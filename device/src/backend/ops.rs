//! Op handlers: validate an SE's op and ranges, then run it against the media
//! (through the stager) and the channel's data area.

use super::*;

/// How an op handler ended.
enum Outcome {
    /// The op reached the media (or the stager); traced as `MediaOp`.
    Ran(i32),
    /// Refused before touching the media (bad range, bad data area, payload that
    /// never verified); the reason is already traced.
    Refused(i32),
}

/// Where a WRITE's payload is copied to from the data area.
#[derive(Clone, Copy)]
pub(super) enum Dst<'r> {
    /// The backend's scratch buffer (write-through, torn-block sabotage).
    Scratch,
    /// Staging room reserved for it.
    Slot(&'r Reservation),
    /// Its range of volatile RAM media, in place.
    Media,
}

/// What every op handler needs besides the SE, derived once per SE.
struct OpCtx {
    /// Intent bits count only when durability tokens were negotiated.
    intent: Intent,
    /// Deadline by which a staged write must be on media.
    due: u64,
    /// `CE_FLAG_DURABLE` if the channel negotiated durability tokens, else 0.
    durable_flag: u32,
}

/// A media result as a CE result.
fn errno_of(r: Result<(), crate::media::MediaError>) -> i32 {
    if r.is_ok() { 0 } else { errno::EIO }
}

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// Run one validated-tid SE: dispatch to its op's handler, trace the media op.
    /// Returns the CE result (0 or a negative errno); a handler may also set CE
    /// flags and `data_crc`.
    pub(super) fn execute(
        &mut self,
        ch: &mut Chan,
        se: &Se,
        ce: &mut Ce,
    ) -> Result<i32, BackendError> {
        let intent = if ch.durable {
            Intent::from_se_flags(se.flags)
        } else {
            Intent::Standard
        };
        let cx = OpCtx {
            intent,
            due: self.cfg.durable.due(intent, ch.power_us, self.now),
            durable_flag: if ch.durable { CE_FLAG_DURABLE } else { 0 },
        };
        if ch.loss != Loss::None || ch.stale.is_some() {
            self.track_loss(ch)?;
        }
        let outcome = match se.op {
            op::FLUSH => self.op_flush(ch, &cx, ce)?,
            op::DISCARD | op::WRITE_ZEROES if self.cfg.discard_wz => self.op_zero(ch, se, &cx, ce),
            op::WRITE => self.op_write(ch, se, &cx, ce)?,
            op::READ => self.op_read(ch, se, ce)?,
            _ => {
                self.reject(ch, Reject::BadOp);
                Outcome::Refused(errno::EOPNOTSUPP)
            }
        };
        if let Loss::Draining { left } = ch.loss {
            ch.loss = match left.saturating_sub(1) {
                0 => Loss::None,
                left => Loss::Draining { left },
            };
        }
        match outcome {
            Outcome::Refused(r) => Ok(r),
            Outcome::Ran(result) => {
                self.shm().tracer.event(&TraceEvent::MediaOp {
                    chan: ch.idx,
                    op: se.op,
                    offset: se.offset,
                    len: se.len,
                    result,
                });
                Ok(result)
            }
        }
    }

    /// v3 FLUSH: every previously completed write is durable when it completes.
    /// After a re-attach following an unclean stop, FLUSHes report -EIO until the
    /// host has been told of the loss ([`Loss`]); they still write everything back.
    fn op_flush(
        &mut self,
        ch: &mut Chan,
        cx: &OpCtx,
        ce: &mut Ce,
    ) -> Result<Outcome, BackendError> {
        let mut r = errno_of(self.st.sync());
        if self.flush_must_fail(ch)? {
            r = errno::EIO;
        }
        if r == 0 {
            ce.flags |= cx.durable_flag;
        }
        Ok(Outcome::Ran(r))
    }

    /// Must the FLUSH at `ch`'s cursor fail? First look at every channel's dead-incarnation
    /// completions; then, while `Failing`, the first failure is the report (its CE goes
    /// to `ch.compr_head`).
    fn flush_must_fail(&mut self, ch: &mut Chan) -> Result<bool, BackendError> {
        if ch.stale.is_some() || self.chans.iter().any(|c| c.stale.is_some()) {
            let mut seen = self.look_at_stale(ch)?;
            for i in 0..self.chans.len() {
                if i as u32 != ch.idx {
                    let mut c = self.chans[i];
                    seen |= self.look_at_stale(&mut c)?;
                    self.chans[i] = c;
                }
            }
            if seen {
                self.fail_flushes_again(ch);
            }
        }
        match ch.loss {
            Loss::None => Ok(false),
            Loss::Draining { .. } | Loss::Failing { report: Some(_) } => Ok(true),
            Loss::Failing { report: None } => {
                ch.loss = Loss::Failing {
                    report: Some(ch.compr_head),
                };
                Ok(true)
            }
        }
    }

    /// The host consumed a dead-incarnation completion since the last look: whatever it
    /// was told before does not cover that write, so every channel fails FLUSHes again
    /// until a new report (`ch` is the channel being served, the others are in
    /// `self.chans`).
    fn fail_flushes_again(&mut self, ch: &mut Chan) {
        ch.loss = Loss::Failing { report: None };
        for c in self.chans.iter_mut().filter(|c| c.idx != ch.idx) {
            c.loss = Loss::Failing { report: None };
        }
    }

    /// Re-count `c`'s dead-incarnation CEs the host has not consumed; true if it
    /// consumed some since the last look. The unconsumed span is `[compr_tail,
    /// compr_head)`; of it, `[end, compr_head)` is the new incarnation's. Unambiguous
    /// while a stale CE is unconsumed (the device never posts into an unconsumed slot,
    /// so `compr_head` cannot lap it); a look that misses the moment the last one went
    /// (the ring lapped since) only keeps counting until the host catches up: safe.
    fn look_at_stale(&self, c: &mut Chan) -> Result<bool, BackendError> {
        let Some(s) = c.stale else {
            return Ok(false);
        };
        let Some((tail, _)) = self.host_pointers(c)? else {
            return Ok(false);
        };
        let size = c.g.compr_size();
        let unconsumed = ring_dist(tail, c.compr_head, size);
        let new = ring_dist(s.end, c.compr_head, size);
        let left = unconsumed.saturating_sub(new) / c.g.el.ce_size;
        c.stale = (left > 0).then_some(Stale { end: s.end, left });
        Ok(left < s.left)
    }

    /// The host's (`compr_tail`, `submr_head`) of `c`, both validated, or `None`
    /// (torn or other-epoch line, or a pointer outside its ring). Tail first: a head
    /// read later is at least the head of when the tail moved.
    fn host_pointers(&self, c: &Chan) -> Result<Option<(u32, u32)>, BackendError> {
        let shm = self.shm();
        let (tail, head) = match c.mode {
            Mode::Nc => match read_host_line(shm, &c.g, true)? {
                Some(h) if h.epoch == c.epoch => (h.compr_tail, h.submr_head),
                _ => return Ok(None),
            },
            Mode::V3 => {
                let t = shm.load_u32(c.g.ctrl(ctrl::COMPR_TAIL))?;
                (t, shm.load_u32(c.g.ctrl(ctrl::SUBMR_HEAD))?)
            }
        };
        Ok((c.g.valid_ce_pos(tail) && c.g.valid_se_pos(head)).then_some((tail, head)))
    }

    /// Before each SE after an unclean re-attach: this channel's own dead-incarnation
    /// CEs (looked at per SE, so `compr_head` cannot lap them unseen), and, with a
    /// report posted, whether the host consumed it: then FLUSHes still in the ring may
    /// predate that and fail (`Draining` up to the host's `submr_head`, this SE
    /// included); later ones are normal again.
    fn track_loss(&mut self, ch: &mut Chan) -> Result<(), BackendError> {
        if ch.stale.is_some() && self.look_at_stale(ch)? {
            self.fail_flushes_again(ch);
        }
        let Loss::Failing { report: Some(p) } = ch.loss else {
            return Ok(());
        };
        // Unreadable or invalid host pointers: not consumed (FLUSHes keep failing).
        let Some((tail, head)) = self.host_pointers(ch)? else {
            return Ok(());
        };
        // Consumed iff the unconsumed span [compr_tail, compr_head) lies within what was
        // posted after the report; as in `look_at_stale`, compr_head cannot lap the
        // report while it is unconsumed.
        let size = ch.g.compr_size();
        let after_report = ring_dist(ch.g.next_ce(p), ch.compr_head, size);
        if ring_dist(tail, ch.compr_head, size) > after_report {
            return Ok(());
        }
        let n = ring_dist(ch.cursor, head, ch.g.submr_size()) / ch.g.el.se_size;
        ch.loss = Loss::Draining { left: n.max(1) };
        Ok(())
    }

    /// DISCARD / WRITE_ZEROES (our extension, offered with DISCARD_WZ): zero a
    /// sector-aligned range; CRITICAL also flushes.
    fn op_zero(&mut self, ch: &Chan, se: &Se, cx: &OpCtx, ce: &mut Ce) -> Outcome {
        if !self.range_ok(se.offset, se.len as u64) {
            self.reject(ch, Reject::BadRange);
            return Outcome::Refused(errno::EINVAL);
        }
        let discard = se.op == op::DISCARD;
        let (chan, tid, len) = (ch.idx as u8, se.req_tid, se.len as u64);
        let mut r = errno_of(self.st.zero(chan, tid, se.offset, len, discard, cx.due));
        if r == 0 && cx.intent == Intent::Critical {
            r = errno_of(self.st.sync());
            if r == 0 {
                ce.flags |= cx.durable_flag;
            }
        }
        Outcome::Ran(r)
    }

    /// WRITE: copy and verify the payload, stage it (or write it through; volatile
    /// RAM media: write it in place); CRITICAL completes only once flushed.
    fn op_write(
        &mut self,
        ch: &Chan,
        se: &Se,
        cx: &OpCtx,
        ce: &mut Ce,
    ) -> Result<Outcome, BackendError> {
        if let Some(refused) = self.check_io(ch, se) {
            return Ok(refused);
        }
        let (chan, tid, len) = (ch.idx as u8, se.req_tid, se.len as usize);
        let torn = self.cfg.sabotage().torn_block;
        // Volatile RAM media: one copy, from the data area straight into the media,
        // checked there. Nothing to stage or flush: on the media is as durable as RAM
        // media gets (`features::VOLATILE_MEDIA` says so), at completion.
        let in_place = match self.st.prepare_in_place() {
            Ok(v) => v && !torn,
            Err(e) => return Ok(Outcome::Ran(errno_of(Err(e)))),
        };
        if in_place {
            if !self.fetch_payload(ch, se, Dst::Media)? {
                return Ok(Outcome::Refused(errno::EIO));
            }
            self.st.wrote_in_place();
            ce.flags |= cx.durable_flag;
            return Ok(Outcome::Ran(0));
        }
        // Otherwise one copy too: the payload goes from the data area straight into
        // staging room reserved for it, and is staged once its CRC verified (the
        // torn-block sabotage works on scratch).
        let staged = if torn {
            None
        } else {
            match self.st.reserve(len) {
                Ok(res) => res,
                Err(e) => return Ok(Outcome::Ran(errno_of(Err(e)))),
            }
        };
        let mut r = match staged {
            Some(res) => match self.fetch_payload(ch, se, Dst::Slot(&res)) {
                Ok(true) => {
                    self.st.commit(res, chan, tid, se.offset, cx.due);
                    0
                }
                Ok(false) => {
                    self.st.unreserve(res);
                    return Ok(Outcome::Refused(errno::EIO));
                }
                Err(e) => {
                    self.st.unreserve(res);
                    return Err(e);
                }
            },
            None => {
                // No staging room (or none at all): through scratch, written through.
                if !self.fetch_payload(ch, se, Dst::Scratch)? {
                    return Ok(Outcome::Refused(errno::EIO));
                }
                #[cfg(feature = "sabotage")]
                if torn {
                    return Ok(self.torn_write(ch, se, cx, ce));
                }
                let data = &self.scratch[..len];
                errno_of(self.st.write(chan, tid, se.offset, data, cx.due))
            }
        };
        if r == 0 && cx.intent == Intent::Critical {
            r = errno_of(self.st.sync());
            if r == 0 {
                ce.flags |= cx.durable_flag;
            }
        }
        Ok(Outcome::Ran(r))
    }

    /// Sabotage `torn_block`: the WRITE (payload verified, in scratch) skips every odd
    /// sector of the range it shares with the previous WRITE of another channel in this
    /// poll, so each block of the overlap keeps that write's data in those sectors.
    #[cfg(feature = "sabotage")]
    fn torn_write(&mut self, ch: &Chan, se: &Se, cx: &OpCtx, ce: &mut Ce) -> Outcome {
        let (start, end) = (se.offset, se.offset + se.len as u64);
        let overlap = self
            .torn_prev
            .filter(|&(c, a, b)| c != ch.idx && a < end && start < b)
            .map(|(_, a, b)| (a.max(start), b.min(end)));
        self.torn_prev = Some((ch.idx, start, end));
        // every odd sector of the overlap keeps the other write's data
        let skipped =
            |s: u64| overlap.is_some_and(|(a, b)| a <= s && s < b && (s / SECTOR) % 2 == 1);
        let mut r = 0;
        let mut s = start;
        while s < end && r == 0 {
            let keep = !skipped(s);
            let mut e = s + SECTOR;
            while e < end && skipped(e) != keep {
                e += SECTOR;
            }
            if keep {
                let data = &self.scratch[(s - start) as usize..(e - start) as usize];
                r = errno_of(self.st.write(ch.idx as u8, se.req_tid, s, data, cx.due));
            }
            s = e;
        }
        if r == 0 && cx.intent == Intent::Critical {
            r = errno_of(self.st.sync());
            if r == 0 {
                ce.flags |= cx.durable_flag;
            }
        }
        Outcome::Ran(r)
    }

    /// READ: media (or staged data) into scratch, then into the data area, with its
    /// CRC in the CE; written back in non-coherent mode.
    fn op_read(&mut self, ch: &Chan, se: &Se, ce: &mut Ce) -> Result<Outcome, BackendError> {
        if let Some(refused) = self.check_io(ch, se) {
            return Ok(refused);
        }
        let shm = self.shm();
        let g = ch.g;
        let len = se.len as usize;
        // Volatile RAM media with nothing staged over the range: straight out of the
        // media (one copy); else media and stager into scratch.
        let in_place = self.st.in_place_mut(se.offset, len).is_some();
        let r = if in_place {
            0
        } else {
            errno_of(self.st.read(se.offset, &mut self.scratch[..len]))
        };
        if r == 0 {
            let data: &[u8] = match self.st.in_place_mut(se.offset, len) {
                Some(bytes) if in_place => bytes,
                _ => &self.scratch[..len],
            };
            copy_to_data(shm, &g, se.data_off, data)?;
            if g.el.data_crc {
                ce.data_crc = payload_crc(data);
            }
            if ch.mode == Mode::Nc && !self.defer_read_write_back(se) {
                data_cache_op(shm, &g, se.data_off, se.len, true)?;
            }
            shm.tracer.event(&TraceEvent::DataCopied {
                chan: ch.idx,
                dir: CopyDir::ToShared,
                data_off: se.data_off,
                len: se.len,
            });
        }
        Ok(Outcome::Ran(r))
    }

    /// A sector-aligned range inside the media?
    fn range_ok(&self, off: u64, len: u64) -> bool {
        off.is_multiple_of(SECTOR)
            && len.is_multiple_of(SECTOR)
            && off.checked_add(len).is_some_and(|e| e <= self.st.size())
    }

    /// READ/WRITE validation: a non-empty range of at most `MAX_IO` bytes inside the
    /// media, and a payload inside the data area. `Some` = refused (and traced).
    fn check_io(&self, ch: &Chan, se: &Se) -> Option<Outcome> {
        if se.len == 0 || se.len > chan::MAX_IO || !self.range_ok(se.offset, se.len as u64) {
            self.reject(ch, Reject::BadRange);
            return Some(Outcome::Refused(errno::EINVAL));
        }
        if se.data_off as u64 >= chan::DATA_SIZE
            || se.data_len < se.len
            || se.data_len > chan::MAX_IO
        {
            self.reject(ch, Reject::BadDataArea);
            return Some(Outcome::Refused(errno::EINVAL));
        }
        None
    }

    /// Trace why the SE at the cursor is refused.
    fn reject(&self, ch: &Chan, why: Reject) {
        self.shm().tracer.event(&TraceEvent::Rejected {
            chan: ch.idx,
            pos: ch.cursor,
            why,
        });
    }

    /// Copy a WRITE payload to `dst` and check its CRC there (non-coherent mode:
    /// re-read within the entry's budget, spread over polls). Returns false if it
    /// never verified (in place, the media range then holds what was read: a failed
    /// WRITE leaves its range undefined, as on any block device).
    pub(super) fn fetch_payload(
        &mut self,
        ch: &Chan,
        se: &Se,
        dst: Dst<'_>,
    ) -> Result<bool, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let len = se.len as usize;
        let check = g.el.data_crc && !self.cfg.sabotage().skip_crc_check;
        let mut first = true;
        while self.may_read(ch, serve::Stage::Payload, first) {
            first = false;
            if ch.mode == Mode::Nc {
                data_cache_op(shm, &g, se.data_off, se.len, false)?;
            }
            let to = match dst {
                Dst::Slot(r) => self.st.slot_mut(r),
                Dst::Scratch => &mut self.scratch[..len],
                Dst::Media => self
                    .st
                    .in_place_mut(se.offset, len)
                    .ok_or(BackendError::Media)?,
            };
            copy_from_data(shm, &g, se.data_off, to)?;
            shm.tracer.event(&TraceEvent::DataCopied {
                chan: ch.idx,
                dir: CopyDir::FromShared,
                data_off: se.data_off,
                len: se.len,
            });
            let got = match dst {
                Dst::Slot(r) => self.st.slot(r),
                Dst::Scratch => &self.scratch[..len],
                Dst::Media => self
                    .st
                    .in_place_mut(se.offset, len)
                    .ok_or(BackendError::Media)?,
            };
            if !check || payload_crc(got) == se.data_crc {
                return Ok(true);
            }
        }
        if !self.give_up(ch, serve::Stage::Payload) {
            // This poll's share of re-reads is spent: the rest at the next poll.
            return Err(BackendError::Stale { chan: ch.idx });
        }
        let why = if ch.mode == Mode::Nc {
            Reject::StaleAfterRetries
        } else {
            Reject::DataCrc
        };
        shm.tracer.event(&TraceEvent::Rejected {
            chan: ch.idx,
            pos: ch.cursor,
            why,
        });
        Ok(false)
    }
}
