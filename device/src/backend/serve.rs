//! The serve loop: heartbeat, then per channel the management plane (`mgmt.rs`)
//! and the data plane (fetch an SE, hand it to its op handler in `ops.rs`, post
//! the CE, publish `compr_head`).

use super::*;
use crate::transport::host_name;

/// Most reads one channel's entry gets per poll in non-coherent mode beyond the
/// first read of each fetch. An entry that does not verify (stale, torn, or simply
/// wrong) thus takes a bounded share of a poll; the rest of its budget
/// (`nc_retries` reads in all) is spent at the following polls, with every other
/// channel served in between.
pub const NC_REREADS_PER_POLL: u32 = 4;

/// Which read of the entry at a cursor a budget counts: the SE, or its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    Se = 0,
    Payload = 1,
}

/// Re-reads spent on the entry at a channel's cursor (non-coherent mode).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Reread {
    /// The entry the counts belong to: (epoch, cursor).
    key: (u32, u32),
    /// Reads spent on its SE and on its payload, across polls.
    spent: [u32; 2],
    /// Reads of this channel in the current poll.
    this_poll: u32,
    /// The last fetch ran out of this poll's share with budget left.
    deferred: bool,
}

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// One round: heartbeat if due (≤ 5 s), management plane, data plane. A failed
    /// heartbeat is reported like a channel's error, after the channels are served.
    pub fn poll(&mut self, now_ns: u64) -> Result<PollStats, BackendError> {
        let mut st = PollStats::default();
        let mut first_err = None;
        if now_ns.saturating_sub(self.last_hb) >= HB_INTERVAL_NS - HB_INTERVAL_NS / 10 {
            match self.heartbeat(now_ns) {
                Ok(()) => st.heartbeats += 1,
                Err(e) => {
                    log::debug!("cbd backend: heartbeat: {e:?}");
                    first_err = Some(e);
                }
            }
        }
        self.now = now_ns;
        #[cfg(feature = "sabotage")]
        {
            self.torn_prev = None;
        }
        for r in self.rereads.iter_mut() {
            r.this_poll = 0;
        }
        for i in 0..self.chans.len() {
            let mut ch = self.chans[i];
            let r = self.poll_channel(&mut ch, &mut st);
            self.chans[i] = ch;
            if let Err(e) = r {
                // Debug only: a peer's bad pointer persists across polls, and the
                // caller reports the returned error (deduplicated) instead.
                log::debug!("cbd backend: channel {}: {:?}", ch.idx, e);
                first_err.get_or_insert(e);
            }
        }
        // ---- durability: the asynchronous write-back (once a deadline passed: start
        // the batch's media writes, collect completions, flush; never waits for the
        // media), then publish the watermarks (after every compr_head of this poll: a
        // watermark never runs ahead of the CE it covers).
        if let Err(e) = self.st.progress(now_ns) {
            log::warn!("cbd backend: write-back/flush failed: {e:?}");
            first_err.get_or_insert(BackendError::Media);
        }
        if let Err(e) = self.publish_watermarks() {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(st),
        }
    }

    /// Rewrite the host and backend records with a fresh `alive_ts` — only while
    /// they are still ours (host record: our hostname; backend record: our host id
    /// and path): a slot another party has written since is never rewritten. Our
    /// host record gone or taken: register again by hostname (the backend record
    /// follows the new host id). Our backend record gone: written again in its slot;
    /// taken by another backend: written in a free slot, and our channel segments'
    /// records follow it.
    pub fn heartbeat(&mut self, now_ns: u64) -> Result<(), BackendError> {
        self.last_hb = now_ns;
        let tp = self.tp.clone();
        let path = self.rec.path;
        let old_host = self.rec.host_id;
        let backend_slot = tp.backend(self.backend_id)?.map(|l| l.rec);
        let backend_ours = backend_slot
            .as_ref()
            .is_some_and(|b| b.state != STATE_NONE && b.host_id == old_host && b.path == path);
        let backend_free = backend_slot.as_ref().is_none_or(|b| b.state == STATE_NONE);
        // ---- host record
        let name = host_name(self.cfg.hostname);
        match tp.host(self.host_id)?.map(|l| l.rec) {
            Some(mut h) if h.state != STATE_NONE && h.hostname == name => {
                h.alive_ts = now_ns;
                tp.write_host(self.host_id, &h)?;
            }
            _ => {
                let id = tp.register_host_as(self.cfg.hostname, now_ns, true)?;
                log::warn!(
                    "cbd backend: host record {} is no longer ours; registered again as host {id}",
                    self.host_id
                );
                self.host_id = id;
            }
        }
        // ---- backend record
        if !backend_ours && !backend_free {
            let id = tp.find_free(SlotKind::Backend, 0)?;
            log::warn!(
                "cbd backend: backend record {} was taken by another backend; moving to {id}",
                self.backend_id
            );
            for c in self.chans.iter() {
                let seg = tp.segment(c.seg_id)?.map(|l| l.rec);
                let ours = seg.is_none_or(|s| {
                    s.state == STATE_NONE
                        || (s.seg_type == SEG_TYPE_CHANNEL && s.backend_id == self.backend_id)
                });
                if ours {
                    let si = SegmentInfo {
                        seg_type: SEG_TYPE_CHANNEL,
                        state: STATE_RUNNING,
                        flags: 0,
                        next_seg: 0,
                        backend_id: id,
                    };
                    tp.write_segment(c.seg_id, &si)?;
                }
            }
            self.backend_id = id;
        }
        self.rec.host_id = self.host_id;
        self.rec.alive_ts = now_ns;
        tp.write_backend(self.backend_id, &self.rec)?;
        self.reap_dead_blkdevs(now_ns)?;
        let ev = TraceEvent::Heartbeat {
            kind: RecordKind::Backend,
            id: self.backend_id,
            alive_ts: now_ns,
        };
        self.shm().tracer.event(&ev);
        Ok(())
    }

    /// A blkdev on this backend whose host stopped its heartbeat (30 s, `is_alive`) is
    /// dead: its record is cleared, and so is its host's record when that is dead too and no
    /// other blkdev names it. What its channels staged is made durable first. The next
    /// host's dev-start RESETs the channels as always; until then they stay as they are
    /// (their rings hold nothing the device has not served). Returns how many were freed.
    pub fn reap_dead_blkdevs(&mut self, now_ns: u64) -> Result<u32, BackendError> {
        let tp = self.tp.clone();
        let mut freed = 0;
        for id in 0..tp.info.blkdev_num {
            let Some(d) = tp.blkdev(id)?.map(|l| l.rec) else {
                continue;
            };
            if d.state == STATE_NONE
                || d.backend_id != self.backend_id
                || is_alive(d.alive_ts, now_ns)
            {
                continue;
            }
            if self.st.sync().is_err() {
                log::warn!("cbd backend: flush before freeing dead blkdev {id} failed");
            }
            tp.clear(SlotKind::Blkdev, id)?;
            freed += 1;
            log::warn!(
                "cbd backend: blkdev {id} of host {}: no heartbeat for {} s; freed",
                d.host_id,
                now_ns.saturating_sub(d.alive_ts) / 1_000_000_000
            );
            let host_dead = tp
                .host(d.host_id)?
                .is_some_and(|h| h.rec.state != STATE_NONE && !is_alive(h.rec.alive_ts, now_ns));
            let mut named = false;
            for other in 0..tp.info.blkdev_num {
                named |= tp
                    .blkdev(other)?
                    .is_some_and(|o| o.rec.state != STATE_NONE && o.rec.host_id == d.host_id);
            }
            if host_dead && !named && d.host_id != self.host_id {
                tp.clear(SlotKind::Host, d.host_id)?;
                log::warn!(
                    "cbd backend: host {} is dead too; its record freed",
                    d.host_id
                );
            }
        }
        Ok(freed)
    }

    pub(super) fn poll_channel(
        &mut self,
        ch: &mut Chan,
        st: &mut PollStats,
    ) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        // ---- management plane
        let mut host_line = None;
        if self.cfg.noncoherent
            && let Some(h) = read_host_line(shm, &g, true)?
            && h.epoch != 0
        {
            if h.epoch != ch.epoch || ch.mode != Mode::Nc {
                self.nc_reset(ch, &h)?;
                st.resets += 1;
            }
            host_line = Some(h);
        }
        if host_line.is_none() {
            if self.v3_mgmt(ch)? {
                st.resets += 1;
            }
            if ch.mode != Mode::V3 {
                return Ok(());
            }
        }
        // ---- data plane
        let (head, compr_tail) = match host_line {
            Some(h) => (h.submr_head, h.compr_tail),
            None => (
                shm.load_u32(g.ctrl(ctrl::SUBMR_HEAD))?,
                shm.load_u32(g.ctrl(ctrl::COMPR_TAIL))?,
            ),
        };
        if !g.valid_se_pos(head) || !g.valid_ce_pos(compr_tail) {
            return Err(BackendError::BadPointer { chan: ch.idx });
        }
        if ch.durable && ch.cursor != head {
            ch.power_us =
                read_dur_host(shm, &g, self.cfg.noncoherent)?.map_or(0, |l| l.power_window_us);
        }
        let mut done = 0;
        let mut result = Ok(());
        // Sabotage: the CE slots posted in this poll (the last two get swapped).
        #[cfg(feature = "sabotage")]
        let mut posted: [Option<u32>; 2] = [None; 2];
        while ch.cursor != head && done < self.cfg.batch {
            // Never overrun compr_tail: keep one CE slot empty.
            if g.next_ce(ch.compr_head) == compr_tail {
                break;
            }
            #[cfg(feature = "sabotage")]
            let before = ch.compr_head;
            let r = self.handle_se(ch);
            #[cfg(feature = "sabotage")]
            if ch.compr_head != before {
                posted = [posted[1], Some(before)];
            }
            match r {
                Ok(()) => {}
                // This poll's share of re-reads is spent, the entry's budget is not:
                // the channel resumes at the same entry at the next poll.
                Err(BackendError::Stale { .. })
                    if core::mem::take(&mut self.rereads[ch.idx as usize].deferred) =>
                {
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            done += 1;
        }
        #[cfg(feature = "sabotage")]
        if self.cfg.sabotage().swap_completions
            && let [Some(a), Some(b)] = posted
        {
            self.swap_ces(ch, a, b)?;
        }
        if done > 0 {
            st.ses += done;
            self.publish_compr_head(ch)?;
        }
        #[cfg(feature = "sabotage")]
        for (off, len) in core::mem::take(&mut self.deferred_read_wb) {
            data_cache_op(shm, &g, off, len, true)?;
        }
        result
    }

    /// Sabotage `publish_before_read_payload_write_back`: hold the READ payload's
    /// write-back until `compr_head` is published (true = held).
    pub(super) fn defer_read_write_back(&mut self, se: &Se) -> bool {
        #[cfg(feature = "sabotage")]
        if self.cfg.sabotage().publish_before_read_payload_write_back {
            return self.deferred_read_wb.push((se.data_off, se.len)).is_ok();
        }
        let _ = se;
        false
    }

    /// Sabotage: exchange the (sealed, not yet published) CEs in slots `a` and `b`.
    #[cfg(feature = "sabotage")]
    fn swap_ces(&mut self, ch: &Chan, a: u32, b: u32) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let n = g.el.ce_size as usize;
        let (mut x, mut y) = ([0u8; MAX_CE_SIZE], [0u8; MAX_CE_SIZE]);
        shm.read(g.ce(a), &mut x[..n])?;
        shm.read(g.ce(b), &mut y[..n])?;
        shm.write(g.ce(a), &y[..n])?;
        shm.write(g.ce(b), &x[..n])?;
        if ch.mode == Mode::Nc {
            shm.write_back(g.ce(a), n as u64)?;
            shm.write_back(g.ce(b), n as u64)?;
        }
        Ok(())
    }

    pub(super) fn publish_compr_head(&mut self, ch: &Chan) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        if !self.cfg.sabotage().skip_compr_head_fence {
            shm.store_fence();
        }
        match ch.mode {
            Mode::V3 => shm.store_u32(g.ctrl(ctrl::COMPR_HEAD), ch.compr_head)?,
            Mode::Nc => {
                let line = DevLine {
                    ack_epoch: ch.epoch,
                    compr_head: ch.compr_head,
                }
                .encode();
                publish_line(shm, g.dev_line, &line, true)?;
            }
        }
        shm.tracer.event(&TraceEvent::PointerPublished {
            chan: ch.idx,
            which: Pointer::ComprHead,
            value: ch.compr_head,
        });
        Ok(())
    }

    /// May the fetch of `stage` at `ch`'s cursor read (again)? Counts the read.
    /// v3: one read per fetch. Non-coherent mode: the first read of every fetch,
    /// then more while this poll's share ([`NC_REREADS_PER_POLL`]) and the entry's
    /// budget (`nc_retries`) last.
    pub(super) fn may_read(&mut self, ch: &Chan, stage: Stage, first: bool) -> bool {
        if ch.mode != Mode::Nc {
            return first;
        }
        let total = self.cfg.nc_retries.max(1);
        let Some(r) = self.rereads.get_mut(ch.idx as usize) else {
            return first;
        };
        if r.key != (ch.epoch, ch.cursor) {
            r.key = (ch.epoch, ch.cursor);
            r.spent = [0; 2];
        }
        let spent = &mut r.spent[stage as usize];
        let ok = first || (r.this_poll < NC_REREADS_PER_POLL && *spent < total);
        if ok {
            *spent = spent.saturating_add(1);
            r.this_poll = r.this_poll.saturating_add(1);
        }
        ok
    }

    /// After a fetch whose reads never verified: true if the entry's budget for
    /// `stage` is spent (give up), false if the fetch is deferred to the next poll.
    pub(super) fn give_up(&mut self, ch: &Chan, stage: Stage) -> bool {
        if ch.mode != Mode::Nc {
            return true;
        }
        let total = self.cfg.nc_retries.max(1);
        let Some(r) = self.rereads.get_mut(ch.idx as usize) else {
            return true;
        };
        let exhausted = r.spent[stage as usize] >= total;
        r.deferred = !exhausted;
        exhausted
    }

    /// Reads spent so far on `stage` of the entry at `ch`'s cursor.
    fn spent(&self, ch: &Chan, stage: Stage) -> u32 {
        self.rereads
            .get(ch.idx as usize)
            .filter(|r| r.key == (ch.epoch, ch.cursor))
            .map_or(0, |r| r.spent[stage as usize])
    }

    /// The entry at `ch`'s cursor is finished: its budget starts afresh for the next.
    fn entry_done(&mut self, ch: &Chan) {
        if let Some(r) = self.rereads.get_mut(ch.idx as usize) {
            r.spent = [0; 2];
            r.deferred = false;
        }
    }

    /// Read (copy) the SE at the cursor. Non-coherent mode: invalidate first and
    /// re-read, within the entry's budget, until CRC and tid are right. `Ok(None)`:
    /// the budget is spent; `Err(Stale)` with the entry deferred: this poll's share is.
    pub(super) fn fetch_se(&mut self, ch: &Chan) -> Result<Option<(Se, bool)>, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let n = g.el.se_size as usize;
        let mut b = [0u8; MAX_SE_SIZE];
        let sab = self.cfg.sabotage();
        let mut first = true;
        while self.may_read(ch, Stage::Se, first) {
            first = false;
            if ch.mode == Mode::Nc && !sab.skip_se_invalidate {
                shm.invalidate(g.se(ch.cursor), n as u64)?;
                shm.full_fence();
            }
            shm.read(g.se(ch.cursor), &mut b[..n])?;
            let Some(se) = g.el.decode_se(&b[..n]) else {
                return Ok(None);
            };
            let crc_ok = sab.skip_crc_check || g.el.entry_crc_ok(&b, g.el.se_size);
            if ch.mode == Mode::V3 {
                return Ok(Some((se, crc_ok)));
            }
            let tid_ok = ch.expect_tid.is_none_or(|t| t == se.req_tid);
            if crc_ok && tid_ok {
                return Ok(Some((se, true)));
            }
            if self.spent(ch, Stage::Se) == 1 {
                let why = if crc_ok { Reject::Tid } else { Reject::SeCrc };
                shm.tracer.event(&TraceEvent::Rejected {
                    chan: ch.idx,
                    pos: ch.cursor,
                    why,
                });
            }
        }
        if !self.give_up(ch, Stage::Se) {
            return Err(BackendError::Stale { chan: ch.idx });
        }
        shm.tracer.event(&TraceEvent::Rejected {
            chan: ch.idx,
            pos: ch.cursor,
            why: Reject::StaleAfterRetries,
        });
        Ok(None)
    }

    pub(super) fn handle_se(&mut self, ch: &mut Chan) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let Some((se, crc_ok)) = self.fetch_se(ch)? else {
            return Err(BackendError::Stale { chan: ch.idx });
        };
        shm.tracer.event(&TraceEvent::SeSeen {
            chan: ch.idx,
            pos: ch.cursor,
            req_tid: se.req_tid,
            op: se.op,
            flags: se.flags,
        });
        let pos = ch.cursor;
        let done_already = crc_ok
            && (se.flags & SE_FLAG_DONE != 0 || ch.skip_upto.is_some_and(|t| se.req_tid <= t));
        if done_already {
            shm.tracer.event(&TraceEvent::SeSkipped {
                chan: ch.idx,
                pos,
                req_tid: se.req_tid,
            });
            self.entry_done(ch);
            ch.cursor = g.next_se(pos);
            ch.expect_tid = Some(se.req_tid.wrapping_add(1));
            return Ok(());
        }
        ch.skip_upto = None;
        let mut ce = Ce {
            req_tid: se.req_tid,
            ..Ce::default()
        };
        if !crc_ok {
            // v3 mode: entry CRC failed. Answer with an error and keep serving.
            shm.tracer.event(&TraceEvent::Rejected {
                chan: ch.idx,
                pos,
                why: Reject::SeCrc,
            });
            ce.result = errno::EBADMSG;
        } else if ch.expect_tid.is_some_and(|t| t != se.req_tid) {
            shm.tracer.event(&TraceEvent::Rejected {
                chan: ch.idx,
                pos,
                why: Reject::Tid,
            });
            ce.result = errno::EINVAL;
        } else {
            ce.result = self.execute(ch, &se, &mut ce)?;
        }
        ch.expect_tid = Some(se.req_tid.wrapping_add(1));
        self.post_ce(ch, &mut ce)?;
        self.entry_done(ch);
        ch.cursor = g.next_se(pos);
        Ok(())
    }

    pub(super) fn post_ce(&mut self, ch: &mut Chan, ce: &mut Ce) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let n = g.el.ce_size;
        let mut b = [0u8; MAX_CE_SIZE];
        g.el.encode_ce(ce, &mut b);
        g.el.seal_ce(&mut b);
        let off = g.ce(ch.compr_head);
        shm.write(off, &b[..n as usize])?;
        if ch.mode == Mode::Nc && !self.cfg.sabotage().skip_ce_write_back {
            shm.write_back(off, n as u64)?;
        }
        shm.tracer.event(&TraceEvent::CePosted {
            chan: ch.idx,
            pos: ch.compr_head,
            req_tid: ce.req_tid,
            result: ce.result,
        });
        ch.compr_head = g.next_ce(ch.compr_head);
        Ok(())
    }
}
