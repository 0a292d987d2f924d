//! The serve loop: heartbeat, then per channel the management plane (`mgmt.rs`)
//! and the data plane (fetch an SE, hand it to its op handler in `ops.rs`, post
//! the CE, publish `compr_head`).

use super::*;

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// One round: heartbeat if due (≤ 5 s), management plane, data plane.
    pub fn poll(&mut self, now_ns: u64) -> Result<PollStats, BackendError> {
        let mut st = PollStats::default();
        if now_ns.saturating_sub(self.last_hb) >= HB_INTERVAL_NS - HB_INTERVAL_NS / 10 {
            self.heartbeat(now_ns)?;
            st.heartbeats += 1;
        }
        self.now = now_ns;
        let mut first_err = None;
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
        // ---- durability: write back + flush once a deadline passed, then publish
        // the watermarks (after every compr_head of this poll: a watermark never
        // runs ahead of the CE it covers).
        if self.st.due(now_ns)
            && let Err(e) = self.st.sync()
        {
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

    /// Rewrite the host and backend records with a fresh `alive_ts`.
    pub fn heartbeat(&mut self, now_ns: u64) -> Result<(), BackendError> {
        self.last_hb = now_ns;
        self.rec.alive_ts = now_ns;
        self.tp.write_backend(self.backend_id, &self.rec)?;
        if let Some(mut h) = self.tp.host(self.host_id)?.map(|l| l.rec) {
            h.alive_ts = now_ns;
            self.tp.write_host(self.host_id, &h)?;
        }
        let ev = TraceEvent::Heartbeat {
            kind: RecordKind::Backend,
            id: self.backend_id,
            alive_ts: now_ns,
        };
        self.shm().tracer.event(&ev);
        Ok(())
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
        while ch.cursor != head && done < self.cfg.batch {
            // Never overrun compr_tail: keep one CE slot empty.
            if g.next_ce(ch.compr_head) == compr_tail {
                break;
            }
            match self.handle_se(ch) {
                Ok(()) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            done += 1;
        }
        if done > 0 {
            st.ses += done;
            self.publish_compr_head(ch)?;
        }
        result
    }

    pub(super) fn publish_compr_head(&mut self, ch: &Chan) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        shm.store_fence();
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

    /// Read (copy) the SE at the cursor. Non-coherent mode: invalidate first and
    /// re-read a bounded number of times until CRC and tid are right.
    pub(super) fn fetch_se(&self, ch: &Chan) -> Result<Option<(Se, bool)>, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let n = g.el.se_size as usize;
        let mut b = [0u8; MAX_SE_SIZE];
        let tries = if ch.mode == Mode::Nc {
            self.cfg.nc_retries.max(1)
        } else {
            1
        };
        let sab = self.cfg.sabotage();
        for attempt in 0..tries {
            if ch.mode == Mode::Nc && !sab.skip_se_invalidate {
                shm.invalidate(g.se(ch.cursor), n as u64)?;
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
            if attempt == 0 {
                let why = if crc_ok { Reject::Tid } else { Reject::SeCrc };
                shm.tracer.event(&TraceEvent::Rejected {
                    chan: ch.idx,
                    pos: ch.cursor,
                    why,
                });
            }
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
