//! Durability tokens on the host side: which completed writes are known durable.

use device::channel::*;
use device::layout::*;
use device::shm::SharedMem;

use super::{HostError, HostQueue, QState};

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

impl<M: SharedMem + ?Sized> HostQueue<'_, M> {
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
            self.tok.restarts += 1;
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

    /// Tids below this were submitted before the last backend restart this queue saw (a new
    /// incarnation on the durability line): unless durable already, they never will be —
    /// the host must send them again to make them durable (0: no restart seen).
    pub fn lost_below(&self) -> u64 {
        self.tok.lost_below
    }

    /// Backend incarnations this queue has seen change (restarts noticed).
    pub fn restarts_seen(&self) -> u64 {
        self.tok.restarts
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

    pub(super) fn token_completed(&mut self, tid: u64, durable: bool) {
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
    pub(super) fn confirm_all(&mut self) {
        let n = self.tok.q.len() as u64 + self.tok.evicted;
        self.tok.q.clear();
        self.tok.evicted = 0;
        self.tokens.confirmed += n;
    }
}
