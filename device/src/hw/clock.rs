//! The device's wall clock: the CMOS RTC's whole seconds, extended between two second
//! edges by the TSC. Pure logic; the kernel feeds it TSC values and RTC readings.
//!
//! Heartbeats are wall-clock nanoseconds compared across machines (a record is alive
//! while its `alive_ts` is less than 30 s old by the *reader's* clock), so the device's
//! clock must not drift. A TSC calibrated once at boot against the PIT does: under TCG on
//! a loaded host every 10 ms calibration window can be stretched by preemption, and
//! measured estimates were 1.6× and 2.2× the real rate, so the device's clock ran at
//! half speed and a host judged the backend dead after about a minute. Here the TSC
//! only fills in the fraction of the current RTC second (at most 999 999 999 ns), so a
//! wrong rate costs less than a second, never more; and the rate itself is re-measured
//! from RTC second edges over an ever longer baseline.
//!
//! ```text
//!  RTC seconds   |  s  |  s+1  |  s+2  | …         now = edge_s·10⁹ + min(Δtsc / hz, 1 s − 1 ns)
//!  edges seen    ^     ^       ^                   hz  = (tsc at edge − tsc at first edge)
//!                first edge                              / (seconds between them), once ≥ 8 s
//! ```

/// Shortest baseline (seconds between the first observed edge and a later one) from
/// which the TSC rate is re-measured: edges are seen up to one poll late, so the rate's
/// error is at most that lateness divided by the baseline.
pub const MIN_BASELINE_S: u64 = 8;

/// The clock's state (see the module comment).
#[derive(Clone, Debug)]
pub struct WallClock {
    hz: u64,
    /// The RTC second in force and the TSC when it was first seen.
    edge_s: u64,
    edge_tsc: u64,
    /// The first second *change* seen (a true edge, unlike the boot reading).
    first_edge: Option<(u64, u64)>,
    last_check_tsc: u64,
    last_ns: u64,
}

impl WallClock {
    /// Start from a boot-time rate estimate and an RTC reading (Unix seconds) taken at
    /// `tsc`.
    pub fn new(hz_estimate: u64, tsc: u64, unix_s: u64) -> Self {
        Self {
            hz: hz_estimate.max(1),
            edge_s: unix_s,
            edge_tsc: tsc,
            first_edge: None,
            last_check_tsc: tsc,
            last_ns: unix_s.saturating_mul(1_000_000_000),
        }
    }

    /// The TSC rate in use (the boot estimate until a long enough baseline exists).
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// Whether the RTC should be read again: about every millisecond by the rate in
    /// use, so a second edge is seen at most about a millisecond late while busy.
    pub fn wants_rtc(&self, tsc: u64) -> bool {
        tsc.wrapping_sub(self.last_check_tsc) >= self.hz / 1000
    }

    /// An RTC reading, in Unix seconds, taken at `tsc`.
    pub fn observe(&mut self, tsc: u64, unix_s: u64) {
        self.last_check_tsc = tsc;
        if unix_s == self.edge_s {
            return;
        }
        if unix_s < self.edge_s || tsc < self.edge_tsc {
            // The RTC was set back (or the TSC jumped): start measuring again.
            self.first_edge = None;
        }
        match self.first_edge {
            None => self.first_edge = Some((tsc, unix_s)),
            Some((t0, s0)) if unix_s >= s0 + MIN_BASELINE_S => {
                self.hz = ((tsc - t0) / (unix_s - s0)).max(1);
            }
            Some(_) => {}
        }
        self.edge_s = unix_s;
        self.edge_tsc = tsc;
    }

    /// Nanoseconds since the Unix epoch at `tsc`; never less than an earlier answer.
    pub fn now_ns(&mut self, tsc: u64) -> u64 {
        let ticks = tsc.saturating_sub(self.edge_tsc) as u128;
        let frac = (ticks * 1_000_000_000 / self.hz as u128).min(999_999_999) as u64;
        let v = self
            .edge_s
            .saturating_mul(1_000_000_000)
            .saturating_add(frac)
            .max(self.last_ns);
        self.last_ns = v;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_HZ: u64 = 2_596_000_000;

    /// Drive a clock with a rate estimate `estimate` through `secs` seconds of real
    /// time, polled every `poll_ms`; return the worst lag and lead against real time
    /// (ns) and the final rate.
    fn run(estimate: u64, secs: u64, poll_ms: u64) -> (u64, u64, u64) {
        let boot_s = 1_800_000_000u64;
        // Boot 0.4 s into a second.
        let real_ns =
            |tsc: u64| boot_s * 1_000_000_000 + 400_000_000 + tsc * 1000 / (REAL_HZ / 1_000_000);
        let mut c = WallClock::new(estimate, 0, boot_s);
        let (mut lag, mut lead) = (0u64, 0u64);
        let step = REAL_HZ / 1000 * poll_ms;
        let mut tsc = 0;
        while tsc < REAL_HZ * secs {
            tsc += step;
            if c.wants_rtc(tsc) {
                c.observe(tsc, real_ns(tsc) / 1_000_000_000);
            }
            let now = c.now_ns(tsc);
            let real = real_ns(tsc);
            lag = lag.max(real.saturating_sub(now));
            lead = lead.max(now.saturating_sub(real));
        }
        (lag, lead, c.hz())
    }

    #[test]
    fn an_inflated_boot_estimate_costs_under_a_second() {
        // The 2.2× estimate measured under load: without the RTC the clock would be
        // 55 s behind after 100 s, past the 30 s heartbeat window.
        let (lag, lead, hz) = run(REAL_HZ * 22 / 10, 100, 1);
        assert!(lag < 1_000_000_000, "lag {lag} ns");
        assert!(lead < 5_000_000, "lead {lead} ns");
        let err = hz.abs_diff(REAL_HZ) * 1000 / REAL_HZ;
        assert!(err <= 1, "rate {hz} Hz, {err}‰ off after 100 s");
    }

    #[test]
    fn a_deflated_estimate_never_runs_ahead_by_a_second() {
        // A quarter of the real rate, and too short a run to re-measure it: only the
        // one-second clamp keeps the clock from running seconds ahead.
        let (lag, lead, hz) = run(REAL_HZ / 4, MIN_BASELINE_S - 2, 1);
        assert_eq!(hz, REAL_HZ / 4);
        assert!(
            lead < 1_000_000_000 && lag < 1_000_000_000,
            "lag {lag} lead {lead}"
        );
    }

    #[test]
    fn sparse_polls_still_bound_the_error() {
        // An idle device that looks every 100 ms.
        let (lag, lead, hz) = run(REAL_HZ * 16 / 10, 60, 100);
        assert!(
            lag < 1_100_000_000 && lead < 200_000_000,
            "lag {lag} lead {lead}"
        );
        assert!(hz.abs_diff(REAL_HZ) * 100 / REAL_HZ <= 2, "rate {hz}");
    }

    #[test]
    fn monotonic_when_the_rtc_is_set_back() {
        let mut c = WallClock::new(1_000, 0, 100);
        c.observe(1_000, 101);
        let a = c.now_ns(1_500);
        c.observe(2_000, 50);
        assert!(c.now_ns(2_500) >= a);
    }

    #[test]
    fn the_rate_waits_for_a_long_enough_baseline() {
        let mut c = WallClock::new(5_000, 0, 10);
        c.observe(1_000, 11); // first edge
        c.observe(2_000 * 4, 15);
        assert_eq!(c.hz(), 5_000, "4 s is too short a baseline");
        c.observe(1_000 + 1_000 * MIN_BASELINE_S, 11 + MIN_BASELINE_S);
        assert_eq!(c.hz(), 1_000);
    }
}
