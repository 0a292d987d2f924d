//! CMOS real-time clock readings → Unix time.

/// Raw register values as read from CMOS (possibly BCD, possibly 12-hour).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RtcReading {
    pub sec: u8,
    pub min: u8,
    pub hour: u8,
    pub day: u8,
    pub month: u8,
    /// Two-digit year.
    pub year: u8,
    /// Century register (0x32); 0 when the platform has none.
    pub century: u8,
    /// Status register B: bit 2 = binary mode, bit 1 = 24-hour mode.
    pub status_b: u8,
}

/// Why a reading could not be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcError {
    /// A field is outside its calendar range after decoding.
    OutOfRange(&'static str),
}

impl core::fmt::Display for RtcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RtcError::OutOfRange(field) => write!(f, "RTC field {field} out of range"),
        }
    }
}

fn bcd(v: u8) -> u8 {
    (v & 0x0f) + (v >> 4) * 10
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Convert a reading to nanoseconds since the Unix epoch.
pub fn unix_nanos(r: &RtcReading) -> Result<u64, RtcError> {
    let binary = r.status_b & 0x04 != 0;
    let h24 = r.status_b & 0x02 != 0;
    let conv = |v: u8| if binary { v } else { bcd(v) };
    let pm = !h24 && r.hour & 0x80 != 0;
    let mut hour = conv(r.hour & 0x7f);
    if !h24 {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let (sec, min, day, month, yy) = (
        conv(r.sec),
        conv(r.min),
        conv(r.day),
        conv(r.month),
        conv(r.year),
    );
    let century = if r.century != 0 { conv(r.century) } else { 20 };
    if sec > 59 {
        return Err(RtcError::OutOfRange("second"));
    }
    if min > 59 {
        return Err(RtcError::OutOfRange("minute"));
    }
    if hour > 23 {
        return Err(RtcError::OutOfRange("hour"));
    }
    if !(1..=31).contains(&day) {
        return Err(RtcError::OutOfRange("day"));
    }
    if !(1..=12).contains(&month) {
        return Err(RtcError::OutOfRange("month"));
    }
    if yy > 99 || !(19..=99).contains(&century) {
        return Err(RtcError::OutOfRange("year"));
    }
    let year = century as i64 * 100 + yy as i64;
    let days = days_from_civil(year, month as u32, day as u32);
    if days < 0 {
        return Err(RtcError::OutOfRange("year"));
    }
    let secs = days as u64 * 86_400 + hour as u64 * 3600 + min as u64 * 60 + sec as u64;
    Ok(secs * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 21), 20_778);
    }

    #[test]
    fn bcd_24h_reading() {
        // 2026-11-21 05:01:14 in BCD, 24-hour mode.
        let r = RtcReading {
            sec: 0x14,
            min: 0x01,
            hour: 0x05,
            day: 0x21,
            month: 0x11,
            year: 0x26,
            century: 0x20,
            status_b: 0x02,
        };
        assert_eq!(unix_nanos(&r).unwrap(), 1_795_237_274 * 1_000_000_000);
    }

    #[test]
    fn binary_12h_pm_reading() {
        let r = RtcReading {
            sec: 0,
            min: 30,
            hour: 0x80 | 1,
            day: 1,
            month: 1,
            year: 70,
            century: 19,
            status_b: 0x04,
        };
        assert_eq!(
            unix_nanos(&r).unwrap(),
            (13 * 3600 + 30 * 60) * 1_000_000_000
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let r = RtcReading {
            sec: 0xff,
            min: 0xff,
            hour: 0xff,
            day: 0,
            month: 0xff,
            year: 0xff,
            century: 0xff,
            status_b: 0,
        };
        assert!(unix_nanos(&r).is_err());
        for b in [0u8, 0x02, 0x04, 0x06] {
            for v in [0u8, 0x59, 0x99, 0xff] {
                let r = RtcReading {
                    sec: v,
                    min: v,
                    hour: v,
                    day: v,
                    month: v,
                    year: v,
                    century: v,
                    status_b: b,
                };
                let _ = unix_nanos(&r);
            }
        }
    }
}
