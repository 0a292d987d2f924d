//! RESET of one queue (v3: the management command; non-coherent: an epoch bump).

use device::channel::*;
use device::layout::*;
use device::meta;
use device::shm::SharedMem;
use device::trace::{RecordKind, TraceEvent};

use super::{HostError, HostQueue, QState, RESET_TIMEOUT_NS};

impl<M: SharedMem + ?Sized> HostQueue<'_, M> {
    /// Send RESET (v3: mgmt_cmd; non-coherent: epoch bump). Only with nothing in flight.
    pub fn start_reset(&mut self, now_ns: u64) -> Result<(), HostError> {
        if !self.inflight.is_empty() {
            return Err(HostError::Busy);
        }
        let shm = self.shm;
        let g = self.g;
        if self.nc {
            let h = read_host_line(shm, &g, true)?.map_or(0, |h| h.epoch);
            let d = read_dev_line(shm, &g, true)?.map_or(0, |d| d.ack_epoch);
            let mut epoch = h.max(d).max(self.epoch).wrapping_add(1);
            if epoch == 0 {
                epoch = 1;
            }
            self.epoch = epoch;
            self.base_tid = (epoch as u64) << 32;
            self.next_tid = self.base_tid;
            self.submr_head = 0;
            self.submr_tail = 0;
            self.compr_tail = 0;
            self.publish_host_line()?;
            shm.tracer.event(&TraceEvent::MgmtCommand {
                chan: self.idx,
                cmd_seq: epoch,
                op: MGMT_OP_RESET,
            });
            self.state = QState::Resetting {
                since_ns: now_ns,
                cmd_seq: 0,
            };
        } else {
            let cmd = meta::read_latest::<MgmtCmd, M>(shm, g.ctrl(ctrl::MGMT_CMD), false)?
                .map_or(0, |c| c.rec.cmd_seq);
            let ret = meta::read_latest::<MgmtRet, M>(shm, g.ctrl(ctrl::MGMT_RET), false)?
                .map_or(0, |r| r.rec.cmd_seq);
            if cmd != ret {
                return Err(HostError::ResetFailed);
            }
            // We are never in the backend's kernel: ask it to poll.
            shm.store_u64(g.ctrl(ctrl::FLAGS), ctrl::FLAG_POLLING)?;
            let seq = cmd.wrapping_add(1);
            let c = MgmtCmd {
                cmd_seq: seq,
                cmd_op: MGMT_OP_RESET,
            };
            meta::write_record(
                shm,
                g.ctrl(ctrl::MGMT_CMD),
                &c,
                RecordKind::MgmtCmd,
                self.idx,
                false,
            )?;
            shm.tracer.event(&TraceEvent::MgmtCommand {
                chan: self.idx,
                cmd_seq: seq as u32,
                op: MGMT_OP_RESET,
            });
            self.state = QState::Resetting {
                since_ns: now_ns,
                cmd_seq: seq,
            };
        }
        Ok(())
    }

    /// Drive a pending RESET. `Ok(true)` once the queue is ready.
    pub fn poll_reset(&mut self, now_ns: u64) -> Result<bool, HostError> {
        let QState::Resetting { since_ns, cmd_seq } = self.state else {
            return Ok(self.state == QState::Ready);
        };
        let shm = self.shm;
        let g = self.g;
        let answered = if self.nc {
            read_dev_line(shm, &g, true)?
                .filter(|d| d.ack_epoch == self.epoch)
                .map(|_| MGMT_RET_OK)
        } else {
            meta::read_latest::<MgmtRet, M>(shm, g.ctrl(ctrl::MGMT_RET), false)?
                .filter(|r| r.rec.cmd_seq == cmd_seq)
                .map(|r| r.rec.cmd_ret)
        };
        match answered {
            Some(MGMT_RET_OK) => {
                shm.tracer.event(&TraceEvent::MgmtAnswered {
                    chan: self.idx,
                    cmd_seq: if self.nc { self.epoch } else { cmd_seq as u32 },
                    ret: MGMT_RET_OK,
                });
                self.submr_head = 0;
                self.submr_tail = 0;
                self.compr_tail = 0;
                self.data_head = 0;
                self.data_tail = 0;
                if !self.nc {
                    self.next_tid = 0;
                    self.tokens.watermark = 0;
                    self.tok.lost_below = 0;
                }
                // The device makes every completed write durable before answering.
                self.confirm_all();
                self.state = QState::Ready;
                self.stats.resets += 1;
                // Learn the backend's incarnation now, while nothing is in flight: a restart
                // before the host's first look at the durability line would otherwise go
                // unnoticed (no incarnation to compare with), and a FLUSH waiting for the
                // dead incarnation's watermark would wait forever. A torn or stale line
                // leaves it unknown until the next read, as before.
                let _ = self.poll_durable(now_ns);
                Ok(true)
            }
            Some(_) => {
                self.state = QState::Failed;
                Err(HostError::ResetFailed)
            }
            None if now_ns.saturating_sub(since_ns) > RESET_TIMEOUT_NS => {
                self.state = QState::Failed;
                Err(HostError::Timeout)
            }
            None => Ok(false),
        }
    }
}
