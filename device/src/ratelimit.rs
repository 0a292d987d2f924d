//! Rate limit for repeated log lines: what a peer writes into shared memory can make
//! the device fail the same way on every poll (thousands of times a second), and a
//! console flooded with one warning hides everything else and slows the serve loop.
//!
//! [`RateLimit::allow`] lets a line through when it differs from the previous one, at
//! most a few per interval, and a repeated one once per interval; a line let through
//! says how many were held back since the last one.

/// One log site's limiter: within one interval, at most `burst` lines, and never the
/// same value twice in a row; a new interval starts with the first line after one has
/// passed.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit<T> {
    interval_ns: u64,
    burst: u32,
    window: Option<u64>,
    in_window: u32,
    last: Option<T>,
    suppressed: u64,
}

impl<T: Copy + PartialEq> RateLimit<T> {
    /// At most `burst` lines per `interval_ns`, a repeated value once per interval.
    pub const fn new(interval_ns: u64, burst: u32) -> Self {
        Self {
            interval_ns,
            burst,
            window: None,
            in_window: 0,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether `value`, seen at `now_ns`, should be logged: `Some(n)` with the number
    /// of lines held back since the last one logged, `None` to stay quiet.
    pub fn allow(&mut self, value: T, now_ns: u64) -> Option<u64> {
        let expired = self
            .window
            .is_none_or(|w| now_ns.saturating_sub(w) >= self.interval_ns);
        if expired {
            self.window = Some(now_ns);
            self.in_window = 0;
            self.last = None;
        }
        if self.last != Some(value) && self.in_window < self.burst {
            self.in_window += 1;
            self.last = Some(value);
            Some(core::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Shows a held-back count after a logged line: nothing for 0, else `" (N more held back)"`.
pub struct HeldBack(pub u64);

impl core::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more held back)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_same_line_passes_once_per_interval_and_reports_what_it_held_back() {
        let mut r = RateLimit::new(S, 4);
        assert_eq!(r.allow(7u32, 0), Some(0));
        for t in 1..1000 {
            assert_eq!(r.allow(7, t * 1000), None, "at {t}");
        }
        assert_eq!(r.allow(7, S - 1), None);
        assert_eq!(r.allow(7, S), Some(1000));
        assert_eq!(r.allow(7, S + 1), None);
    }

    #[test]
    fn changed_lines_pass_up_to_the_burst_then_wait_for_the_next_interval() {
        let mut r = RateLimit::new(S, 3);
        assert_eq!(r.allow(1u32, 0), Some(0));
        assert_eq!(r.allow(1, 1), None);
        assert_eq!(r.allow(2, 2), Some(1));
        assert_eq!(r.allow(1, 3), Some(0));
        // Alternating values: the burst is spent, nothing more this interval.
        for t in 4..100 {
            assert_eq!(r.allow((t % 2) as u32, t), None, "at {t}");
        }
        assert_eq!(r.allow(1, S + 3), Some(96));
    }

    #[test]
    fn the_held_back_count_is_shown_only_when_there_is_one() {
        extern crate std;
        use std::format;
        assert_eq!(format!("x{}", HeldBack(0)), "x");
        assert_eq!(format!("x{}", HeldBack(3)), "x (3 more held back)");
    }
}
