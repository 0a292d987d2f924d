//! Is the backend there? What the queues do while it is not: **hold** their requests (they
//! stay in the ring; a restarted backend re-attaches and runs them) until the backend has
//! shown no sign of life for `--recover-timeout`, then fail I/O with `EIO`.
//!
//! Signs of life are judged on the host's clock only: the backend's `alive_ts` is the
//! other machine's clock, so what counts is that it *changes*. The backend is **down**
//! when its record is unreadable or not `RUNNING`, when its heartbeat is older than the
//! v3 timeout (30 s, `is_alive`), or when `alive_ts` has not changed for [`DEAD_AFTER_NS`]
//! (two v3 heartbeat intervals; the device rewrites it every 4.5 s). A queue with requests
//! in flight and no completion for [`DEAD_AFTER_NS`] reports a **stalled ring** in the log
//! (it does not change the state: a slow backend that keeps its heartbeat is alive).

use device::layout::STATE_RUNNING;
use device::transport::{Transport, is_alive};

use crate::linux::mem::MappedMem;

/// The backend counts as down after this long without a new heartbeat (host clock).
pub const DEAD_AFTER_NS: u64 = 10_000_000_000;
/// Default `--recover-timeout`: how long I/O is held for a backend that is down.
pub const DEFAULT_RECOVER_TIMEOUT_NS: u64 = 120_000_000_000;

/// What the queues should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Alive: carry on.
    Up,
    /// Down for less than the bound: keep waiting.
    Holding,
    /// Down for longer than the bound: fail with EIO (until it is seen alive again).
    Failed,
}

/// The liveness tracker of one disk (behind a mutex in the shared state).
#[derive(Debug)]
pub struct Liveness {
    backend_id: u32,
    recover_timeout_ns: u64,
    /// Last `alive_ts` read and when (host clock) it was first seen.
    last_ts: u64,
    seen_at: u64,
    verdict: Verdict,
    /// Outages seen (down → up again).
    pub outages: u64,
    /// Longest outage so far (host clock, from the last sign of life to the return).
    pub longest_ns: u64,
}

impl Liveness {
    pub fn new(backend_id: u32, recover_timeout_ns: u64, now: u64) -> Liveness {
        Liveness {
            backend_id,
            recover_timeout_ns,
            last_ts: 0,
            seen_at: now,
            verdict: Verdict::Up,
            outages: 0,
            longest_ns: 0,
        }
    }

    /// Read the backend record now and update the verdict (logging each change once).
    pub fn observe(&mut self, tp: &Transport<'static, MappedMem>, now: u64) -> Verdict {
        let rec = tp.backend(self.backend_id).ok().flatten().map(|b| b.rec);
        let up = match rec {
            Some(r) if r.state == STATE_RUNNING && is_alive(r.alive_ts, now) => {
                if r.alive_ts != self.last_ts {
                    self.last_ts = r.alive_ts;
                    self.seen_at = now;
                }
                now.saturating_sub(self.seen_at) <= DEAD_AFTER_NS
            }
            _ => false,
        };
        self.step(up, now)
    }

    fn step(&mut self, up: bool, now: u64) -> Verdict {
        let down_for = now.saturating_sub(self.seen_at);
        let next = if up {
            Verdict::Up
        } else if down_for > self.recover_timeout_ns {
            Verdict::Failed
        } else {
            Verdict::Holding
        };
        let s = down_for / 1_000_000_000;
        match (self.verdict, next) {
            (Verdict::Up, Verdict::Holding) => log::warn!(
                "backend {}: no sign of life for {s} s (dead or restarting); holding I/O for up to {} s (--recover-timeout)",
                self.backend_id,
                self.recover_timeout_ns / 1_000_000_000
            ),
            (Verdict::Up | Verdict::Holding, Verdict::Failed) => log::error!(
                "backend {}: did not return within {} s (--recover-timeout); failing I/O with EIO",
                self.backend_id,
                self.recover_timeout_ns / 1_000_000_000
            ),
            (Verdict::Holding | Verdict::Failed, Verdict::Up) => {
                self.outages += 1;
                log::warn!(
                    "backend {}: alive again; resuming held I/O (replaying what it lost)",
                    self.backend_id
                );
            }
            _ => {}
        }
        if next == Verdict::Up && self.verdict != Verdict::Up {
            self.longest_ns = self.longest_ns.max(down_for);
        }
        self.verdict = next;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_then_fails_after_the_bound_and_recovers() {
        let mut l = Liveness::new(0, 60_000_000_000, 0);
        assert_eq!(l.step(true, 1), Verdict::Up);
        assert_eq!(l.step(false, 5_000_000_000), Verdict::Holding);
        assert_eq!(l.step(false, 60_000_000_000), Verdict::Holding);
        assert_eq!(l.step(false, 60_000_000_001), Verdict::Failed);
        assert_eq!(l.step(true, 70_000_000_000), Verdict::Up);
        assert_eq!(l.outages, 1);
    }
}
