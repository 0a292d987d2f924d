//! Where the device's time goes: cycles per phase of the serve loop, from the trace
//! events the engine already emits and a cycle counter (the TSC in the kernel).
//!
//! The engine reports each protocol step as a [`TraceEvent`] right after it did it.
//! A [`Profile`] reads the counter at every event and charges the cycles since the
//! previous mark to the phase that event ends: the cycles before `SeSeen` went into
//! finding and validating an SE, the cycles before `DataCopied { FromShared }` into
//! fetching the payload, and so on ([`Phase::ending_at`]). The serve loop adds three
//! marks of its own: the start of a poll, its end (the durability sync and the
//! watermarks after the last channel), and the idle halts between polls.
//!
//! ```text
//!  begin_poll ─ SeSeen ─ DataCopied(From) ─ MediaOp ─ CePosted ─ PointerPublished ─ end_poll ─ idle
//!     │  se-fetch  │   payload-in    │  stage/execute │ ce-post │  publish   │ poll-tail │ idle
//! ```
//!
//! A poll with no engine event at all (nothing to do) goes to `spin` as a whole: the
//! device waiting for its host, not working.
//!
//! Counters are relaxed atomics, so a `Profile` can live in a `static` tracer. The
//! figures are cycles; [`Profile::report`] turns them into shares and, given the
//! counter's frequency, microseconds per request.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::trace::{CopyDir, TraceEvent};

/// A phase of the serve loop (the cycles up to the event that ends it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Poll start or the previous request → an SE read, checked and traced
    /// (ring scan, heartbeat, management, invalidate + copy of the entry).
    SeFetch,
    /// → a WRITE's payload copied out of the data area (invalidate, copy, re-reads).
    PayloadIn,
    /// → a READ's data read from the media or the stager and copied into the data area.
    ReadOut,
    /// → the op done (WRITE: payload CRC, copy into the staging buffer or write
    /// through; READ: CRC, write-back of the payload; FLUSH: the sync).
    Execute,
    /// → the CE sealed and written (and written back).
    CePost,
    /// → `compr_head` (or another pointer) published.
    Publish,
    /// The end of a poll's channels → the end of the poll: due durability syncs
    /// (media write-back of staged data, flush), watermarks.
    PollTail,
    /// A whole poll that found nothing to do (no engine event between its start and
    /// end): the device spinning on rings the host has not written to yet.
    Spin,
    /// Halted between polls (nothing to do).
    Idle,
    /// Anything else: the serve loop outside `poll` (console), records, RESETs.
    Other,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::SeFetch,
        Phase::PayloadIn,
        Phase::ReadOut,
        Phase::Execute,
        Phase::CePost,
        Phase::Publish,
        Phase::PollTail,
        Phase::Spin,
        Phase::Idle,
        Phase::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::SeFetch => "se-fetch",
            Phase::PayloadIn => "payload-in",
            Phase::ReadOut => "read-out",
            Phase::Execute => "execute",
            Phase::CePost => "ce-post",
            Phase::Publish => "publish",
            Phase::PollTail => "poll-tail",
            Phase::Spin => "spin",
            Phase::Idle => "idle",
            Phase::Other => "other",
        }
    }

    /// The phase an event ends; `None`: the event does not end one (line
    /// write-backs and invalidates belong to the step they are part of).
    pub fn ending_at(ev: &TraceEvent) -> Option<Phase> {
        Some(match ev {
            TraceEvent::SeSeen { .. } | TraceEvent::SeSkipped { .. } => Phase::SeFetch,
            TraceEvent::DataCopied {
                dir: CopyDir::FromShared,
                ..
            } => Phase::PayloadIn,
            TraceEvent::DataCopied {
                dir: CopyDir::ToShared,
                ..
            } => Phase::ReadOut,
            TraceEvent::MediaOp { .. } | TraceEvent::Rejected { .. } => Phase::Execute,
            TraceEvent::CePosted { .. } => Phase::CePost,
            TraceEvent::PointerPublished { .. } => Phase::Publish,
            TraceEvent::WrittenBack { .. } | TraceEvent::Invalidated { .. } => return None,
            _ => Phase::Other,
        })
    }
}

const N: usize = Phase::ALL.len();

/// Cycles per phase, charged at each mark.
pub struct Profile {
    last: AtomicU64,
    /// An engine event was seen since the poll began.
    worked: AtomicBool,
    cycles: [AtomicU64; N],
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Default for Profile {
    fn default() -> Self {
        Self::new()
    }
}

impl Profile {
    pub const fn new() -> Self {
        Profile {
            last: AtomicU64::new(0),
            worked: AtomicBool::new(false),
            cycles: [const { AtomicU64::new(0) }; N],
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn charge(&self, phase: Phase, now: u64) {
        let last = self.last.swap(now, Relaxed);
        if last != 0 {
            self.cycles[phase as usize].fetch_add(now.saturating_sub(last), Relaxed);
        }
    }

    /// An engine event at counter value `now`.
    pub fn event(&self, ev: &TraceEvent, now: u64) {
        if let TraceEvent::CePosted { .. } = ev {
            self.requests.fetch_add(1, Relaxed);
        }
        if let TraceEvent::DataCopied { len, .. } = ev {
            self.bytes.fetch_add(*len as u64, Relaxed);
        }
        self.worked.store(true, Relaxed);
        if let Some(p) = Phase::ending_at(ev) {
            self.charge(p, now);
        }
    }

    /// The serve loop calls `backend.poll` now: the time since the last mark was
    /// spent outside the engine.
    pub fn begin_poll(&self, now: u64) {
        self.charge(Phase::Other, now);
        self.worked.store(false, Relaxed);
    }

    /// `backend.poll` returned: the tail of a poll that did something, or a whole
    /// empty one.
    pub fn end_poll(&self, now: u64) {
        let worked = self.worked.load(Relaxed);
        self.charge(if worked { Phase::PollTail } else { Phase::Spin }, now);
    }

    /// A halt between polls ended.
    pub fn end_idle(&self, now: u64) {
        self.charge(Phase::Idle, now);
    }

    pub fn cycles(&self, p: Phase) -> u64 {
        self.cycles[p as usize].load(Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Every figure back to zero (keeps the last mark, so the next interval counts).
    pub fn reset(&self) {
        for c in &self.cycles {
            c.store(0, Relaxed);
        }
        self.requests.store(0, Relaxed);
        self.bytes.store(0, Relaxed);
    }

    /// One line per phase (`name cycles share µs/request`) plus a total, through
    /// `line` (the kernel logs them). `hz`: the counter's frequency.
    pub fn report(&self, hz: u64, mut line: impl FnMut(core::fmt::Arguments<'_>)) {
        let total: u64 = Phase::ALL.iter().map(|&p| self.cycles(p)).sum();
        let reqs = self.requests();
        let busy = total - self.cycles(Phase::Idle);
        let us = |c: u64| {
            if hz == 0 || reqs == 0 {
                0.0
            } else {
                c as f64 * 1e6 / hz as f64 / reqs as f64
            }
        };
        line(format_args!(
            "profile: requests={} bytes={} cycles={} busy={} ({:.1} us/request busy)",
            reqs,
            self.bytes.load(Relaxed),
            total,
            busy,
            us(busy)
        ));
        for p in Phase::ALL {
            let c = self.cycles(p);
            line(format_args!(
                "profile: {:<10} {:>14} cycles {:>5.1}% {:>9.1} us/request",
                p.name(),
                c,
                if total == 0 {
                    0.0
                } else {
                    100.0 * c as f64 / total as f64
                },
                us(c)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Pointer;

    fn copied(dir: CopyDir) -> TraceEvent {
        TraceEvent::DataCopied {
            chan: 0,
            dir,
            data_off: 0,
            len: 4096,
        }
    }

    /// A WRITE and a READ walked through with a clock the test sets: each interval
    /// lands in the phase its closing event names, line calls charge nothing.
    #[test]
    fn intervals_go_to_the_phase_their_closing_event_ends() {
        let p = Profile::new();
        let seen = TraceEvent::SeSeen {
            chan: 0,
            pos: 0,
            req_tid: 1,
            op: 1,
            flags: 0,
        };
        let media = TraceEvent::MediaOp {
            chan: 0,
            op: 1,
            offset: 0,
            len: 4096,
            result: 0,
        };
        let ce = TraceEvent::CePosted {
            chan: 0,
            pos: 0,
            req_tid: 1,
            result: 0,
        };
        let publ = TraceEvent::PointerPublished {
            chan: 0,
            which: Pointer::ComprHead,
            value: 16,
        };
        let inval = TraceEvent::Invalidated { off: 0, len: 64 };
        p.begin_poll(1000); // first mark: nothing charged
        p.event(&seen, 1010);
        p.event(&inval, 1015);
        p.event(&copied(CopyDir::FromShared), 1040);
        p.event(&media, 1100);
        p.event(&ce, 1105);
        p.event(&publ, 1107);
        p.event(&seen, 1110);
        p.event(&copied(CopyDir::ToShared), 1200);
        p.event(&media, 1203);
        p.event(&ce, 1204);
        p.end_poll(1300);
        p.end_idle(1800);
        p.begin_poll(1810);
        // An empty poll: all of it is spin, none of it poll-tail.
        p.end_poll(1850);
        p.begin_poll(1852);
        assert_eq!(p.cycles(Phase::SeFetch), 10 + 3);
        assert_eq!(p.cycles(Phase::PayloadIn), 30);
        assert_eq!(p.cycles(Phase::ReadOut), 90);
        assert_eq!(p.cycles(Phase::Execute), 60 + 3);
        assert_eq!(p.cycles(Phase::CePost), 5 + 1);
        assert_eq!(p.cycles(Phase::Publish), 2);
        assert_eq!(p.cycles(Phase::PollTail), 96);
        assert_eq!(p.cycles(Phase::Idle), 500);
        assert_eq!(p.cycles(Phase::Spin), 40);
        assert_eq!(p.cycles(Phase::Other), 10 + 2);
        assert_eq!(p.requests(), 2);
        let mut lines = 0;
        let mut first = None;
        p.report(1_000_000, |a| {
            lines += 1;
            if first.is_none() {
                first = Some(format!("{a}"));
            }
        });
        assert_eq!(lines, 1 + Phase::ALL.len());
        // 852 cycles in all, 352 busy: 176 cycles = 176 µs per request at 1 MHz.
        assert_eq!(
            first.unwrap(),
            "profile: requests=2 bytes=8192 cycles=852 busy=352 (176.0 us/request busy)"
        );
        p.reset();
        assert_eq!(p.cycles(Phase::Idle), 0);
        assert_eq!(p.requests(), 0);
    }
}
