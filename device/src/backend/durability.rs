//! Durability tokens on the backend side: negotiation per channel, the
//! device-owned durability line and its watermark.

use super::*;

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// Does the blkdev using this backend accept DURABLE_TOKENS on `ch`? Non-coherent
    /// mode: the host line says so (it travels with the epoch); v3 mode: the blkdev
    /// record (written before the RESET, ordered in coherent memory).
    pub(super) fn accepts_durable(&self, ch: &Chan) -> Result<bool, BackendError> {
        if !self.cfg.durable.offer {
            return Ok(false);
        }
        let bit = features::DURABLE_TOKENS;
        if ch.mode == Mode::Nc {
            let h = read_host_line(self.shm(), &ch.g, true)?;
            return Ok(h.is_some_and(|h| h.features as u64 & bit != 0));
        }
        // Only a live record counts: any host can write a blkdev record naming this
        // backend, and a dead one left (or forged) in a lower slot must not decide the
        // negotiation of the host that dev-started since (dev-start ignores dead
        // records too).
        for id in 0..self.tp.info.blkdev_num {
            if let Some(b) = self.tp.blkdev(id)?
                && b.rec.state == STATE_RUNNING
                && b.rec.backend_id == self.backend_id
                && is_alive(b.rec.alive_ts, self.now)
            {
                return Ok(b.rec.features & bit != 0);
            }
        }
        Ok(false)
    }

    /// Re-read the negotiation for `ch` and (if on) publish its durability line.
    pub(super) fn refresh_durable(&mut self, ch: &mut Chan) -> Result<(), BackendError> {
        ch.durable = self.accepts_durable(ch)?;
        ch.power_us = 0;
        if ch.durable {
            self.publish_dur_line(ch)?;
        }
        Ok(())
    }

    pub(super) fn publish_dur_line(&self, ch: &Chan) -> Result<(), BackendError> {
        let line = DurDevLine {
            incarnation: self.incarnation,
            durable_tid: ch.dur_pub,
        }
        .encode();
        publish_line(
            self.shm(),
            ch.g.ctrl(ctrl::DUR_DEV_LINE),
            &line,
            self.cfg.noncoherent,
        )?;
        Ok(())
    }

    /// Publish every durable channel's watermark that moved.
    pub(super) fn publish_watermarks(&mut self) -> Result<(), BackendError> {
        for i in 0..self.chans.len() {
            let mut ch = self.chans[i];
            if !ch.durable {
                continue;
            }
            let Some(next) = ch.expect_tid else { continue };
            let w = self.st.watermark(ch.idx as u8, next);
            // Sabotage: claim everything executed is durable, flushed or not.
            #[cfg(feature = "sabotage")]
            let w = if self.cfg.sabotage().early_watermark {
                next
            } else {
                w
            };
            if w > ch.dur_pub {
                ch.dur_pub = w;
                self.publish_dur_line(&ch)?;
                self.chans[i] = ch;
            }
        }
        Ok(())
    }

    /// Before a RESET is answered: every write completed so far becomes durable.
    pub(super) fn sync_for_reset(&mut self, ch: &Chan) {
        if self.st.sync().is_err() {
            log::warn!("cbd backend: channel {}: flush before RESET failed", ch.idx);
            self.st.forget_chan(ch.idx as u8);
        }
    }
}
