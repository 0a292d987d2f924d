//! The management plane: the v3 management command (RESET) and the non-coherent
//! mode's epoch bump, each answered after the channel is back at its initial state.

use super::*;

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// v3 management plane: answer a pending command. Returns true if a RESET ran.
    pub(super) fn v3_mgmt(&mut self, ch: &mut Chan) -> Result<bool, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let nc = self.cfg.noncoherent;
        let cmd = meta::read_latest::<MgmtCmd, M>(shm, g.ctrl(ctrl::MGMT_CMD), nc)?;
        let Some(cmd) = cmd else { return Ok(false) };
        let ret_seq = meta::read_latest::<MgmtRet, M>(shm, g.ctrl(ctrl::MGMT_RET), nc)?
            .map_or(0, |r| r.rec.cmd_seq);
        if cmd.rec.cmd_seq == ret_seq {
            return Ok(false);
        }
        shm.tracer.event(&TraceEvent::MgmtCommand {
            chan: ch.idx,
            cmd_seq: cmd.rec.cmd_seq as u32,
            op: cmd.rec.cmd_op,
        });
        let ret = if cmd.rec.cmd_op == MGMT_OP_RESET {
            self.v3_reset(ch)?;
            MGMT_RET_OK
        } else {
            MGMT_RET_EIO
        };
        let r = MgmtRet {
            cmd_seq: cmd.rec.cmd_seq,
            cmd_ret: ret,
        };
        meta::write_record(
            shm,
            g.ctrl(ctrl::MGMT_RET),
            &r,
            RecordKind::MgmtRet,
            ch.idx,
            nc,
        )?;
        shm.tracer.event(&TraceEvent::MgmtAnswered {
            chan: ch.idx,
            cmd_seq: cmd.rec.cmd_seq as u32,
            ret,
        });
        Ok(ret == MGMT_RET_OK)
    }

    /// v3 RESET: back to the initial state — pointers and both rings zeroed, cursor
    /// and tid expectation forgotten.
    fn v3_reset(&mut self, ch: &mut Chan) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        // Our handler is synchronous: nothing is ever in flight between polls.
        // Completed-but-staged writes become durable before the RESET is
        // answered; v3 tids restart at 0, so the watermark restarts too.
        self.sync_for_reset(ch);
        self.st.forget_chan(ch.idx as u8);
        ch.dur_pub = 0;
        ch.loss = Loss::None;
        ch.stale = None;
        ch.cursor = 0;
        ch.expect_tid = None;
        ch.skip_upto = None;
        ch.compr_head = 0;
        ch.mode = Mode::V3;
        ch.epoch = 0;
        for p in [
            ctrl::SUBMR_HEAD,
            ctrl::SUBMR_TAIL,
            ctrl::COMPR_HEAD,
            ctrl::COMPR_TAIL,
        ] {
            shm.store_u32(g.ctrl(p), 0)?;
        }
        // No write-back or fence: v3 mode works on coherent memory only (its pointers
        // share a line between the two writers and its host writes nothing back), where
        // the host sees these stores without a write-back, in order (x86 keeps stores in
        // order), and no later load of ours depends on them being seen first.
        shm.fill(g.ce(0), g.el.compr_size() + g.el.submr_size(), 0)?;
        self.refresh_durable(ch)?;
        Ok(())
    }

    /// Non-coherent reset: the host bumped its epoch (with all its pointers at 0).
    pub(super) fn nc_reset(&mut self, ch: &mut Chan, h: &HostLine) -> Result<(), BackendError> {
        let shm = self.shm();
        let g = ch.g;
        shm.tracer.event(&TraceEvent::MgmtCommand {
            chan: ch.idx,
            cmd_seq: h.epoch,
            op: MGMT_OP_RESET,
        });
        // Tids are monotonic across epochs: the watermark carries over.
        self.sync_for_reset(ch);
        ch.loss = Loss::None;
        ch.stale = None;
        ch.mode = Mode::Nc;
        ch.epoch = h.epoch;
        ch.cursor = 0;
        ch.compr_head = 0;
        ch.expect_tid = Some(h.base_tid);
        ch.skip_upto = None;
        ch.durable = self.cfg.durable.offer && h.features as u64 & features::DURABLE_TOKENS != 0;
        ch.power_us = 0;
        if ch.durable {
            ch.dur_pub = ch.dur_pub.max(self.st.watermark(ch.idx as u8, h.base_tid));
            self.publish_dur_line(ch)?;
        }
        // Neither ring is cleared: the host reads only CEs published after this answer
        // (each written back before its `compr_head`), and a stale CE or SE is rejected
        // by tid + CRC (tids never repeat across epochs).
        let line = DevLine {
            ack_epoch: h.epoch,
            compr_head: 0,
        }
        .encode();
        publish_line(shm, g.dev_line, &line, true)?;
        shm.tracer.event(&TraceEvent::MgmtAnswered {
            chan: ch.idx,
            cmd_seq: h.epoch,
            ret: MGMT_RET_OK,
        });
        Ok(())
    }
}
