//! Submission: a request into the SE ring and its payload into the data area.

use device::channel::*;
use device::layout::*;
use device::shm::SharedMem;
use device::trace::{CopyDir, Pointer, TraceEvent};

use super::{HostError, HostQueue, InFlight, Intent, MAX_DEPTH, QState, Request};

impl<M: SharedMem + ?Sized> HostQueue<'_, M> {
    pub(super) fn publish_host_line(&mut self) -> Result<(), HostError> {
        let line = HostLine {
            epoch: self.epoch,
            submr_head: self.submr_head,
            submr_tail: self.submr_tail,
            compr_tail: self.compr_tail,
            base_tid: self.base_tid,
            tail_tid: self.inflight.front().map_or(self.next_tid, |f| f.tid),
            features: if self.durable {
                features::DURABLE_TOKENS as u32
            } else {
                0
            },
        }
        .encode();
        publish_line(self.shm, self.g.host_line, &line, true)?;
        self.shm.tracer.event(&TraceEvent::PointerPublished {
            chan: self.idx,
            which: Pointer::HostLine,
            value: self.submr_head,
        });
        Ok(())
    }

    fn flush_deferred(&mut self) -> Result<(), HostError> {
        if let Some((off, len)) = self.deferred_wb.take() {
            data_cache_op(self.shm, &self.g, off, len, true)?;
            self.shm.store_fence();
        }
        Ok(())
    }

    /// Submit a request; `payload` must be `req.len` bytes for WRITE. Returns req_tid.
    pub fn submit(&mut self, req: Request, payload: &[u8]) -> Result<u64, HostError> {
        self.submit_intent(req, payload, Intent::Standard)
    }

    /// Submit with a durability intent. CRITICAL completes only once durable;
    /// without negotiated tokens it is refused (`Unsupported`: chain a FLUSH), and
    /// EPHEMERAL is sent as STANDARD.
    pub fn submit_intent(
        &mut self,
        req: Request,
        payload: &[u8],
        intent: Intent,
    ) -> Result<u64, HostError> {
        let intent = match intent {
            Intent::Critical if !self.durable => return Err(HostError::Unsupported),
            i if !self.durable => {
                let _ = i;
                Intent::Standard
            }
            i => i,
        };
        self.flush_deferred()?;
        if self.state != QState::Ready {
            return Err(HostError::NotReady);
        }
        let has_data = matches!(req.op, op::READ | op::WRITE);
        if (has_data && (req.len == 0 || req.len > chan::MAX_IO))
            || !req.len.is_multiple_of(512)
            || !req.offset.is_multiple_of(512)
            || (req.op == op::WRITE && payload.len() != req.len as usize)
            || req.op > op::WRITE_ZEROES
        {
            return Err(HostError::Invalid);
        }
        if self.inflight.len() >= self.cfg.queue_depth.min(MAX_DEPTH) {
            return Err(HostError::Busy);
        }
        let g = self.g;
        let se_size = g.el.se_size;
        let used = (self.submr_head + g.submr_size() - self.submr_tail) % g.submr_size();
        if g.submr_size() - used < 2 * se_size {
            return Err(HostError::Busy);
        }
        let span = if has_data {
            req.len.div_ceil(chan::DATA_ALIGN) * chan::DATA_ALIGN
        } else {
            0
        };
        if (self.data_head - self.data_tail) + span as u64
            > chan::DATA_SIZE - chan::DATA_ALIGN as u64
        {
            return Err(HostError::Busy);
        }
        let shm = self.shm;
        let data_off = (self.data_head % chan::DATA_SIZE) as u32;
        let tid = self.next_tid;
        let mut se = Se {
            op: req.op,
            flags: intent.se_flags(),
            req_tid: tid,
            offset: req.offset,
            len: req.len,
            ..Se::default()
        };
        if has_data {
            se.data_off = data_off;
            se.data_len = req.len;
        }
        if req.op == op::WRITE {
            copy_to_data(shm, &g, data_off, payload)?;
            if g.el.data_crc {
                se.data_crc = payload_crc(payload);
            }
            shm.tracer.event(&TraceEvent::DataCopied {
                chan: self.idx,
                dir: CopyDir::ToShared,
                data_off,
                len: req.len,
            });
            if self.nc {
                if self.cfg.publish_before_payload_write_back() {
                    self.deferred_wb = Some((data_off, req.len));
                } else {
                    data_cache_op(shm, &g, data_off, req.len, true)?;
                }
            }
        }
        let mut b = [0u8; MAX_SE_SIZE];
        g.el.encode_se(&se, &mut b);
        g.el.seal_se(&mut b);
        let pos = self.submr_head;
        shm.write(g.se(pos), &b[..se_size as usize])?;
        if self.nc && !self.cfg.sab().skip_se_write_back {
            shm.write_back(g.se(pos), se_size as u64)?;
        }
        shm.tracer.event(&TraceEvent::SePosted {
            chan: self.idx,
            pos,
            req_tid: tid,
            op: req.op,
        });
        if !self.cfg.sab().skip_submr_head_fence {
            shm.store_fence();
        }
        self.submr_head = g.next_se(pos);
        if self.nc {
            self.publish_host_line()?;
        } else {
            shm.store_u32(g.ctrl(ctrl::SUBMR_HEAD), self.submr_head)?;
            shm.tracer.event(&TraceEvent::PointerPublished {
                chan: self.idx,
                which: Pointer::SubmrHead,
                value: self.submr_head,
            });
        }
        self.next_tid = tid.wrapping_add(1);
        self.data_head += span as u64;
        self.stats.submitted += 1;
        if matches!(req.op, op::WRITE | op::WRITE_ZEROES | op::DISCARD) {
            self.tokens.issued += 1;
        }
        self.stats.se_wraps += (self.submr_head == 0) as u64;
        self.stats.data_wraps += (data_off as u64 + span as u64 > chan::DATA_SIZE) as u64;
        let _ = self.inflight.push_back(InFlight {
            tid,
            pos,
            req,
            data_off,
            data_span: span,
            done: false,
        });
        Ok(tid)
    }
}
