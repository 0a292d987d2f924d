//! Op handlers: validate an SE's op and ranges, then run it against the media
//! (through the stager) and the channel's data area.

use super::*;

impl<'a, M: SharedMem + ?Sized, D: Media> Backend<'a, M, D> {
    /// Validate the SE's op and ranges, then run it against the media.
    pub(super) fn execute(
        &mut self,
        ch: &mut Chan,
        se: &Se,
        ce: &mut Ce,
    ) -> Result<i32, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let reject = |why| {
            shm.tracer.event(&TraceEvent::Rejected {
                chan: ch.idx,
                pos: ch.cursor,
                why,
            });
        };
        let size = self.st.size();
        // Intent bits count only when durability tokens were negotiated.
        let intent = if ch.durable {
            Intent::from_se_flags(se.flags)
        } else {
            Intent::Standard
        };
        let due = self.cfg.durable.due(intent, ch.power_us, self.now);
        let (chan, tid) = (ch.idx as u8, se.req_tid);
        let durable_flag = if ch.durable { CE_FLAG_DURABLE } else { 0 };
        let range_ok = |off: u64, len: u64| {
            off.is_multiple_of(SECTOR)
                && len.is_multiple_of(SECTOR)
                && off.checked_add(len).is_some_and(|e| e <= size)
        };
        let media_op =
            |r: Result<(), crate::media::MediaError>| if r.is_ok() { 0 } else { errno::EIO };
        let res = match se.op {
            // v3 FLUSH: every previously completed write is durable when it completes.
            op::FLUSH => {
                let mut r = media_op(self.st.sync());
                if ch.flush_eio {
                    ch.flush_eio = false;
                    r = errno::EIO;
                }
                if r == 0 {
                    ce.flags |= durable_flag;
                }
                r
            }
            op::DISCARD | op::WRITE_ZEROES if self.cfg.discard_wz => {
                if !range_ok(se.offset, se.len as u64) {
                    reject(Reject::BadRange);
                    return Ok(errno::EINVAL);
                }
                let discard = se.op == op::DISCARD;
                let mut r =
                    media_op(
                        self.st
                            .zero(chan, tid, se.offset, se.len as u64, discard, due),
                    );
                if r == 0 && intent == Intent::Critical {
                    r = media_op(self.st.sync());
                    ce.flags |= durable_flag;
                }
                r
            }
            op::READ | op::WRITE => {
                if se.len == 0 || se.len > chan::MAX_IO || !range_ok(se.offset, se.len as u64) {
                    reject(Reject::BadRange);
                    return Ok(errno::EINVAL);
                }
                if se.data_off as u64 >= chan::DATA_SIZE
                    || se.data_len < se.len
                    || se.data_len > chan::MAX_IO
                {
                    reject(Reject::BadDataArea);
                    return Ok(errno::EINVAL);
                }
                let len = se.len as usize;
                if se.op == op::WRITE {
                    if !self.fetch_payload(ch, se)? {
                        return Ok(errno::EIO);
                    }
                    let mut r =
                        media_op(
                            self.st
                                .write(chan, tid, se.offset, &self.scratch[..len], due),
                        );
                    if r == 0 && intent == Intent::Critical {
                        r = media_op(self.st.sync());
                        if r == 0 {
                            ce.flags |= durable_flag;
                        }
                    }
                    r
                } else {
                    let r = media_op(self.st.read(se.offset, &mut self.scratch[..len]));
                    if r == 0 {
                        copy_to_data(shm, &g, se.data_off, &self.scratch[..len])?;
                        if g.el.data_crc {
                            ce.data_crc = payload_crc(&self.scratch[..len]);
                        }
                        if ch.mode == Mode::Nc {
                            data_cache_op(shm, &g, se.data_off, se.len, true)?;
                        }
                        let ev = TraceEvent::DataCopied {
                            chan: ch.idx,
                            dir: CopyDir::ToShared,
                            data_off: se.data_off,
                            len: se.len,
                        };
                        shm.tracer.event(&ev);
                    }
                    r
                }
            }
            _ => {
                reject(Reject::BadOp);
                return Ok(errno::EOPNOTSUPP);
            }
        };
        let ev = TraceEvent::MediaOp {
            chan: ch.idx,
            op: se.op,
            offset: se.offset,
            len: se.len,
            result: res,
        };
        shm.tracer.event(&ev);
        Ok(res)
    }

    /// Copy a WRITE payload into scratch and check its CRC (bounded re-read in
    /// non-coherent mode). Returns false if it never verified.
    pub(super) fn fetch_payload(&mut self, ch: &Chan, se: &Se) -> Result<bool, BackendError> {
        let shm = self.shm();
        let g = ch.g;
        let len = se.len as usize;
        let check = g.el.data_crc && !self.cfg.sabotage().skip_crc_check;
        let tries = if ch.mode == Mode::Nc {
            self.cfg.nc_retries.max(1)
        } else {
            1
        };
        for _ in 0..tries {
            if ch.mode == Mode::Nc {
                data_cache_op(shm, &g, se.data_off, se.len, false)?;
            }
            copy_from_data(shm, &g, se.data_off, &mut self.scratch[..len])?;
            shm.tracer.event(&TraceEvent::DataCopied {
                chan: ch.idx,
                dir: CopyDir::FromShared,
                data_off: se.data_off,
                len: se.len,
            });
            if !check || payload_crc(&self.scratch[..len]) == se.data_crc {
                return Ok(true);
            }
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
