//! The host (blkdev) role of the protocol: what the Linux CBD driver does, in
//! the same crate, so the engines can be tested against each other natively and
//! the Linux host program can reuse it.
//!
//! Non-blocking like the backend: [`HostQueue::submit`] and [`HostQueue::poll`]
//! return immediately (`Busy` / `None` when there is nothing to do).

use device::channel::*;
pub use device::durable::Intent;
use device::layout::*;
use device::meta;
use device::shm::{OutOfBounds, SharedMem, Shm};
use device::trace::{CopyDir, Pointer, RecordKind, Reject, TraceEvent};
use device::transport::{SlotKind, Transport, TransportError, is_alive};

/// Most queues (channels) per blkdev and most requests in flight per queue.
pub const MAX_QUEUES: usize = 16;
pub const MAX_DEPTH: usize = 128;
/// Completed, not yet confirmed durable write tokens tracked one by one per queue
/// (older ones are still counted, without their latency).
pub const MAX_TOKENS: usize = 256;
/// v3 waits 30 s for a RESET answer.
pub const RESET_TIMEOUT_NS: u64 = 30_000_000_000;

/// Deliberate protocol violations, **only** for the adversary's negative tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSabotage {
    /// Publish `submr_head` before writing back the WRITE payload (the write-back
    /// happens at the next submission, as if the thread were preempted).
    pub publish_before_payload_write_back: bool,
    /// Keep the device line inside the host's cache line (must match the backend).
    pub shared_ctrl_line: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct HostConfig<'a> {
    pub hostname: &'a str,
    /// Require the non-coherent mode (the backend must advertise it).
    pub noncoherent: bool,
    pub queue_depth: usize,
    /// Non-coherent mode: re-reads of a stale CE/payload before giving up.
    pub nc_retries: u32,
    /// Accept durability tokens when the backend offers them.
    pub durable_tokens: bool,
    pub sabotage: HostSabotage,
}
impl Default for HostConfig<'_> {
    fn default() -> Self {
        Self {
            hostname: "host",
            noncoherent: false,
            queue_depth: MAX_DEPTH,
            nc_retries: 512,
            durable_tokens: true,
            sabotage: HostSabotage::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    Transport(TransportError),
    Shm(OutOfBounds),
    /// No live backend / backend not alive / wrong state.
    NoBackend,
    /// Backend does not offer a required feature (non-coherent mode).
    Unsupported,
    /// Another running blkdev already uses the backend.
    InUse,
    /// Queue not ready (RESET not answered yet).
    NotReady,
    /// Ring, data area or depth full; poll completions and retry.
    Busy,
    /// Request malformed (length, alignment, payload size).
    Invalid,
    /// Previous management command not completed, or RESET answered with EIO.
    ResetFailed,
    /// RESET not answered within 30 s.
    Timeout,
    /// The device published a pointer outside its ring.
    BadPointer,
    /// A CE failed validation (coherent mode; it was skipped).
    BadCompletion {
        req_tid: u64,
    },
    /// Non-coherent mode: a CE never became valid within the re-read bound.
    Stale,
}
impl From<TransportError> for HostError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}
impl From<OutOfBounds> for HostError {
    fn from(e: OutOfBounds) -> Self {
        Self::Shm(e)
    }
}

/// One block request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: u32,
    /// Byte offset on the backend device (512-aligned).
    pub offset: u64,
    /// Byte length (512-aligned, ≤ 1 MiB; 0 for FLUSH).
    pub len: u32,
}

/// A finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub req_tid: u64,
    pub req: Request,
    /// 0 or a negative errno.
    pub result: i32,
    /// Already durable at completion (CE flag DURABLE, or covered by the watermark).
    pub durable: bool,
}

/// Durability-token counters of one queue (copy them out while running).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// Modifying requests (WRITE, WRITE_ZEROES, DISCARD) submitted.
    pub issued: u64,
    /// Of those, completed successfully.
    pub completed: u64,
    /// Confirmed durable (at completion or later by the watermark).
    pub confirmed: u64,
    /// Confirmed by the CE itself (CRITICAL).
    pub confirmed_at_completion: u64,
    /// Completed but never confirmed: the backend restarted (new incarnation)
    /// while they were staged.
    pub lost: u64,
    /// Completion → confirmation latency over the tokens confirmed by the watermark.
    pub latency_sum_ns: u64,
    pub latency_max_ns: u64,
    pub latency_samples: u64,
    /// Last watermark read (exclusive) and the backend incarnation it belongs to.
    pub watermark: u64,
    pub incarnation: u32,
}
impl TokenStats {
    pub fn mean_latency_ns(&self) -> u64 {
        self.latency_sum_ns
            .checked_div(self.latency_samples)
            .unwrap_or(0)
    }
    /// Completed, not yet confirmed (nor lost).
    pub fn outstanding(&self) -> u64 {
        self.completed - self.confirmed - self.lost
    }
}

/// What one [`HostQueue::poll_durable`] learnt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurableUpdate {
    pub watermark: u64,
    pub confirmed: u64,
    pub lost: u64,
}

#[derive(Clone, Debug, Default)]
struct Tokens {
    /// (req_tid, completed at) of completed, unconfirmed tokens, in tid order.
    q: heapless::Deque<(u64, u64), MAX_TOKENS>,
    /// Tokens evicted from `q` (a prefix): how many and the largest tid.
    evicted: u64,
    evicted_max: u64,
    incarnation: Option<u32>,
    /// After a new incarnation: tids below this may have been completed by the old
    /// one (staging lost), so they are never confirmed.
    lost_below: u64,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    tid: u64,
    pos: u32,
    req: Request,
    data_off: u32,
    data_span: u32,
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QState {
    Resetting { since_ns: u64, cmd_seq: u8 },
    Ready,
    Failed,
}

/// One queue = one channel.
pub struct HostQueue<'a, M: SharedMem + ?Sized> {
    shm: Shm<'a, M>,
    pub idx: u32,
    g: ChannelGeom,
    nc: bool,
    cfg: HostConfig<'a>,
    state: QState,
    submr_head: u32,
    submr_tail: u32,
    compr_tail: u32,
    next_tid: u64,
    epoch: u32,
    base_tid: u64,
    data_head: u64,
    data_tail: u64,
    inflight: heapless::Deque<InFlight, MAX_DEPTH>,
    deferred_wb: Option<(u32, u32)>,
    pub stats: QueueStats,
    /// Durability tokens negotiated for this queue.
    durable: bool,
    tok: Tokens,
    pub tokens: TokenStats,
    power_window_us: u64,
    now_ns: u64,
}

/// Counters of one queue (tests use them to prove wrap-around happened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub submitted: u64,
    pub completed: u64,
    /// Submission ring wrapped to offset 0.
    pub se_wraps: u64,
    /// A payload extent wrapped from the end of the data area to its start.
    pub data_wraps: u64,
    pub resets: u64,
}

impl<'a, M: SharedMem + ?Sized> HostQueue<'a, M> {
    fn new(shm: Shm<'a, M>, idx: u32, g: ChannelGeom, nc: bool, cfg: HostConfig<'a>) -> Self {
        Self {
            shm,
            idx,
            g,
            nc,
            cfg,
            state: QState::Failed,
            submr_head: 0,
            submr_tail: 0,
            compr_tail: 0,
            next_tid: 0,
            epoch: 0,
            base_tid: 0,
            data_head: 0,
            data_tail: 0,
            inflight: heapless::Deque::new(),
            deferred_wb: None,
            stats: QueueStats::default(),
            durable: false,
            tok: Tokens::default(),
            tokens: TokenStats::default(),
            power_window_us: 0,
            now_ns: 0,
        }
    }

    /// Durability tokens are on for this queue (backend offered, we accepted).
    pub fn durable_tokens(&self) -> bool {
        self.durable
    }

    /// Advertise the power window (µs the host guarantees power; 0 = none).
    pub fn set_power_window_us(&mut self, us: u64) -> Result<(), HostError> {
        self.power_window_us = us;
        if self.durable {
            let line = DurHostLine {
                power_window_us: us,
            }
            .encode();
            publish_line(self.shm, self.g.ctrl(ctrl::DUR_HOST_LINE), &line, self.nc)?;
        }
        Ok(())
    }

    /// Read the device's durability line and confirm every token below the
    /// watermark (or declare the unconfirmed ones lost if the backend restarted).
    /// `now_ns` stamps confirmation latencies.
    pub fn poll_durable(&mut self, now_ns: u64) -> Result<DurableUpdate, HostError> {
        self.now_ns = now_ns;
        let mut up = DurableUpdate {
            watermark: self.tokens.watermark,
            ..DurableUpdate::default()
        };
        if !self.durable || self.state != QState::Ready {
            return Ok(up);
        }
        let Some(l) = read_dur_dev(self.shm, &self.g, self.nc)? else {
            return Ok(up); // torn or stale: keep the last value
        };
        if self.tok.incarnation.is_some_and(|g| g != l.incarnation) {
            // Backend restarted: staged writes of the old incarnation may be gone.
            let n = self.tok.q.len() as u64 + self.tok.evicted;
            self.tok.q.clear();
            self.tok.evicted = 0;
            self.tokens.lost += n;
            up.lost = n;
            self.tokens.watermark = 0;
            self.tok.lost_below = self.next_tid;
        }
        self.tok.incarnation = Some(l.incarnation);
        self.tokens.incarnation = l.incarnation;
        let w = l.durable_tid.max(self.tokens.watermark);
        self.tokens.watermark = w;
        up.watermark = w;
        up.confirmed = self.confirm_below(w, now_ns);
        Ok(up)
    }

    fn confirm_below(&mut self, w: u64, now_ns: u64) -> u64 {
        let mut n = 0;
        if self.tok.evicted > 0 && self.tok.evicted_max < w {
            n += self.tok.evicted;
            self.tok.evicted = 0;
        }
        while let Some(&(tid, t)) = self.tok.q.front() {
            if tid >= w {
                break;
            }
            self.tok.q.pop_front();
            let lat = now_ns.saturating_sub(t);
            self.tokens.latency_sum_ns += lat;
            self.tokens.latency_max_ns = self.tokens.latency_max_ns.max(lat);
            self.tokens.latency_samples += 1;
            n += 1;
        }
        self.tokens.confirmed += n;
        n
    }

    /// Is the write `req_tid` (completed on this queue) known durable?
    pub fn is_durable(&self, req_tid: u64) -> bool {
        req_tid < self.tokens.watermark
            && req_tid >= self.tok.lost_below
            && !self.tok.q.iter().any(|&(t, _)| t == req_tid)
            && !(self.tok.evicted > 0 && req_tid <= self.tok.evicted_max)
    }

    /// Flush without a command: true once every write completed so far is durable
    /// (call [`HostQueue::poll_durable`] to make progress). A v3 FLUSH gives the same.
    pub fn all_completed_durable(&self) -> bool {
        self.tok.q.is_empty() && self.tok.evicted == 0
    }

    fn token_completed(&mut self, tid: u64, durable: bool) {
        self.tokens.completed += 1;
        if tid < self.tok.lost_below && !durable {
            self.tokens.lost += 1;
            return;
        }
        if durable {
            self.tokens.confirmed += 1;
            self.tokens.confirmed_at_completion += 1;
            return;
        }
        // Without negotiated tokens the entry waits for a FLUSH (`confirm_all`).
        if self.tok.q.is_full() {
            self.evict_one();
        }
        let _ = self.tok.q.push_back((tid, self.now_ns));
    }

    fn evict_one(&mut self) {
        if let Some((t, _)) = self.tok.q.pop_front() {
            self.tok.evicted += 1;
            self.tok.evicted_max = self.tok.evicted_max.max(t);
        }
    }

    /// Every token completed so far is durable (a FLUSH completed, or a RESET answer).
    fn confirm_all(&mut self) {
        let n = self.tok.q.len() as u64 + self.tok.evicted;
        self.tok.q.clear();
        self.tok.evicted = 0;
        self.tokens.confirmed += n;
    }

    pub fn is_ready(&self) -> bool {
        self.state == QState::Ready
    }
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }
    pub fn noncoherent(&self) -> bool {
        self.nc
    }

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

    fn publish_host_line(&mut self) -> Result<(), HostError> {
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
                if self.cfg.sabotage.publish_before_payload_write_back {
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
        if self.nc {
            shm.write_back(g.se(pos), se_size as u64)?;
        }
        shm.tracer.event(&TraceEvent::SePosted {
            chan: self.idx,
            pos,
            req_tid: tid,
            op: req.op,
        });
        shm.store_fence();
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
            if self.nc {
                shm.invalidate(g.ce(self.compr_tail), n as u64)?;
            }
            shm.read(g.ce(self.compr_tail), &mut b[..n])?;
            let Some(ce) = g.el.decode_ce(&b[..n]) else {
                break;
            };
            let slot = self
                .inflight
                .iter()
                .position(|f| f.tid == ce.req_tid && !f.done);
            if g.el.entry_crc_ok(&b, g.el.ce_size)
                && let Some(i) = slot
            {
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
                if !g.el.data_crc || payload_crc(&read_buf[..len]) == ce.data_crc {
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
        // DONE before compr_tail moves: a re-attaching backend that sees the new
        // compr_tail also sees DONE, so nothing completes twice.
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
        if self.nc {
            shm.write_back(g.se(pos), n as u64)?;
            shm.store_fence();
        }
        Ok(())
    }
}

/// A registered host on the transport.
pub struct Host<'a, M: SharedMem + ?Sized> {
    pub tp: Transport<'a, M>,
    pub cfg: HostConfig<'a>,
    pub host_id: u32,
}

impl<'a, M: SharedMem + ?Sized> Host<'a, M> {
    /// Open the transport and register (or re-register) this host.
    pub fn register(shm: Shm<'a, M>, cfg: HostConfig<'a>, now_ns: u64) -> Result<Self, HostError> {
        let tp = Transport::open(shm, cfg.noncoherent)?;
        let host_id = tp.register_host(cfg.hostname, now_ns)?;
        Ok(Self { tp, cfg, host_id })
    }

    /// First RUNNING, alive backend (offering non-coherent mode if we need it).
    pub fn find_backend(&self, now_ns: u64) -> Result<u32, HostError> {
        for id in 0..self.tp.info.backend_num {
            if let Some(b) = self.tp.backend(id)?
                && b.rec.state == STATE_RUNNING
                && is_alive(b.rec.alive_ts, now_ns)
                && (!self.cfg.noncoherent || b.rec.features & features::NONCOHERENT != 0)
            {
                return Ok(id);
            }
        }
        Err(HostError::NoBackend)
    }

    /// dev-start: check the backend, RESET every queue, write the blkdev record.
    /// Queues become usable once [`Blkdev::poll_ready`] returns true.
    pub fn dev_start(
        &self,
        backend_id: u32,
        queues: u32,
        now_ns: u64,
    ) -> Result<Blkdev<'a, M>, HostError> {
        let tp = &self.tp;
        let b = tp.backend(backend_id)?.ok_or(HostError::NoBackend)?.rec;
        if b.state != STATE_RUNNING || !is_alive(b.alive_ts, now_ns) {
            return Err(HostError::NoBackend);
        }
        let crcs = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
        if self.cfg.noncoherent
            && (b.features & features::NONCOHERENT == 0 || tp.info.flags & crcs != crcs)
        {
            return Err(HostError::Unsupported);
        }
        let queues = if queues == 0 { b.n_handlers } else { queues };
        if queues > b.n_handlers
            || queues as usize > MAX_QUEUES
            || b.n_handlers as usize > backend_rec::MAX_HANDLERS
        {
            return Err(HostError::Invalid);
        }
        for id in 0..tp.info.blkdev_num {
            if let Some(d) = tp.blkdev(id)?
                && d.rec.state == STATE_RUNNING
                && d.rec.backend_id == backend_id
                && is_alive(d.rec.alive_ts, now_ns)
            {
                return Err(HostError::InUse);
            }
        }
        let blkdev_id = tp.find_free(SlotKind::Blkdev, 0)?;
        let durable = self.cfg.durable_tokens && b.features & features::DURABLE_TOKENS != 0;
        let mut features = if self.cfg.noncoherent {
            features::NONCOHERENT
        } else {
            0
        };
        if durable {
            features |= features::DURABLE_TOKENS;
        }
        // The record (with the accepted features) goes first: a v3-mode backend
        // reads the acceptance when it answers the RESET.
        let rec = BlkdevInfo {
            state: STATE_RUNNING,
            alive_ts: now_ns,
            backend_id,
            host_id: self.host_id,
            mapped_id: blkdev_id,
            features,
        };
        tp.write_blkdev(blkdev_id, &rec)?;
        let mut qs = heapless::Vec::new();
        if let Err(e) = self.start_queues(&b, backend_id, queues, durable, now_ns, &mut qs) {
            let _ = tp.clear(SlotKind::Blkdev, blkdev_id);
            return Err(e);
        }
        Ok(Blkdev {
            tp: tp.clone(),
            host_id: self.host_id,
            blkdev_id,
            backend_id,
            queues: qs,
            rec,
            last_hb: now_ns,
        })
    }

    fn start_queues(
        &self,
        b: &BackendInfo,
        backend_id: u32,
        queues: u32,
        durable: bool,
        now_ns: u64,
        qs: &mut heapless::Vec<HostQueue<'a, M>, MAX_QUEUES>,
    ) -> Result<(), HostError> {
        let tp = &self.tp;
        for q in 0..queues {
            let seg_id = b.handler_channels[q as usize];
            let seg = tp.segment(seg_id)?.ok_or(HostError::NoBackend)?.rec;
            if seg.seg_type != SEG_TYPE_CHANNEL || seg.backend_id != backend_id {
                return Err(HostError::NoBackend);
            }
            let g = ChannelGeom::new(
                tp.channel_base(seg_id)?,
                tp.info.flags,
                self.cfg.sabotage.shared_ctrl_line,
            );
            let mut hq = HostQueue::new(tp.shm, q, g, self.cfg.noncoherent, self.cfg);
            hq.durable = durable;
            hq.now_ns = now_ns;
            if durable {
                hq.set_power_window_us(0)?;
            }
            hq.start_reset(now_ns)?;
            let _ = qs.push(hq);
        }
        Ok(())
    }
}

/// A started blkdev (/dev/cbdN on Linux).
pub struct Blkdev<'a, M: SharedMem + ?Sized> {
    tp: Transport<'a, M>,
    pub host_id: u32,
    pub blkdev_id: u32,
    pub backend_id: u32,
    pub queues: heapless::Vec<HostQueue<'a, M>, MAX_QUEUES>,
    rec: BlkdevInfo,
    last_hb: u64,
}

impl<'a, M: SharedMem + ?Sized> Blkdev<'a, M> {
    /// Drive pending RESETs; true when every queue is ready.
    pub fn poll_ready(&mut self, now_ns: u64) -> Result<bool, HostError> {
        let mut all = true;
        for q in self.queues.iter_mut() {
            all &= q.poll_reset(now_ns)?;
        }
        Ok(all)
    }

    /// Rewrite the blkdev and host records if 5 s have passed.
    pub fn heartbeat(&mut self, now_ns: u64) -> Result<bool, HostError> {
        if now_ns.saturating_sub(self.last_hb) < HB_INTERVAL_NS - HB_INTERVAL_NS / 10 {
            return Ok(false);
        }
        self.last_hb = now_ns;
        self.rec.alive_ts = now_ns;
        self.tp.write_blkdev(self.blkdev_id, &self.rec)?;
        if let Some(mut h) = self.tp.host(self.host_id)?.map(|l| l.rec) {
            h.alive_ts = now_ns;
            self.tp.write_host(self.host_id, &h)?;
        }
        self.tp.shm.tracer.event(&TraceEvent::Heartbeat {
            kind: RecordKind::Blkdev,
            id: self.blkdev_id,
            alive_ts: now_ns,
        });
        Ok(true)
    }

    /// dev-stop: refuse while requests are in flight, then clear the blkdev record.
    pub fn stop(&mut self) -> Result<(), HostError> {
        if self.queues.iter().any(|q| q.in_flight() > 0) {
            return Err(HostError::Busy);
        }
        self.tp.clear(SlotKind::Blkdev, self.blkdev_id)?;
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
