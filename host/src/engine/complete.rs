//! Completion: validate the CE, copy READ data out, mark the SE done, reclaim in order.

use device::channel::*;
use device::layout::*;
use device::shm::SharedMem;
use device::trace::{CopyDir, Pointer, Reject, TraceEvent};

use super::{Completion, HostError, HostQueue, QState};

impl<M: SharedMem + ?Sized> HostQueue<'_, M> {
    /// Read the CE at `compr_tail` into private memory; validate it.
    fn fetch_ce(&self) -> Result<Option<(Ce, usize)>, HostError> {
        let shm = self.shm;
        let g = self.g;
        let n = g.el.ce_size as usize;
        let mut b = [0u8; MAX_CE_SIZE];
        let tries = if self.nc {
            self.cfg.nc_retries.max(1)
        } else {
            1
        };
        for _ in 0..tries {
            let sab = self.cfg.sab();
            if self.nc && !sab.skip_ce_invalidate {
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
                return Ok(Some((ce, i)));
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
                return Ok(None);
            }
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

    /// [`HostQueue::poll`] with the current time (stamps token completions).
    pub fn poll_at(
        &mut self,
        read_buf: &mut [u8],
        now_ns: u64,
    ) -> Result<Option<Completion>, HostError> {
        self.now_ns = now_ns;
        if self.state != QState::Ready {
            return Ok(None);
        }
        let shm = self.shm;
        let g = self.g;
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
        if compr_head == self.compr_tail {
            return Ok(None);
        }
        let pos = self.compr_tail;
        let Some((ce, i)) = self.fetch_ce()? else {
            // Coherent mode: skip the bad CE so the queue keeps going.
            let mut b = [0u8; MAX_CE_SIZE];
            shm.read(g.ce(pos), &mut b[..g.el.ce_size as usize])?;
            let tid = g.el.decode_ce(&b).map_or(0, |c| c.req_tid);
            self.compr_tail = g.next_ce(pos);
            shm.store_u32(g.ctrl(ctrl::COMPR_TAIL), self.compr_tail)?;
            return Err(HostError::BadCompletion { req_tid: tid });
        };
        let Some(&f) = self.inflight.iter().nth(i) else {
            return Err(HostError::Invalid);
        };
        let mut result = ce.result;
        if f.req.op == op::READ && result == 0 {
            let len = f.req.len as usize;
            if read_buf.len() < len {
                return Err(HostError::Invalid);
            }
            let tries = if self.nc {
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
        if self.nc {
            self.publish_host_line()?;
        } else {
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
        Ok(Some(Completion {
            req_tid: ce.req_tid,
            req: f.req,
            result,
            durable,
        }))
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
