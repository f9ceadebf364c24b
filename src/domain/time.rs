//! Japan calendar dates (Asia/Tokyo, UTC+9 with no daylight saving since 1951) and the arithmetic
//! the rules need. Pure: times come in as parameters; nothing here reads the clock.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::ids::IdError;

const JST_OFFSET_SECS: i64 = 9 * 3600;
const DAY_SECS: i64 = 86_400;

/// A calendar date in Japan, stored as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JapanDate(i32);

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - i64::from(e.duration().subsec_nanos() > 0),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy as i32;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl JapanDate {
    /// The Japan calendar date at instant `t`.
    pub fn of(t: SystemTime) -> Self {
        JapanDate((unix_secs(t) + JST_OFFSET_SECS).div_euclid(DAY_SECS) as i32)
    }

    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Self> {
        ((1..=12).contains(&m) && (1..=days_in_month(y, m)).contains(&d))
            .then(|| JapanDate(days_from_civil(y, m, d)))
    }

    /// The date `days` later (earlier if negative). Saturates at the ends of the range instead
    /// of wrapping: callers bound what they add (days supplied at most 365), and a date must
    /// never wrap from the far future into the past.
    pub fn add_days(self, days: i32) -> Self {
        JapanDate(self.0.saturating_add(days))
    }

    /// Whole days from `self` to `other` (negative if `other` is earlier).
    pub fn days_until(self, other: JapanDate) -> i32 {
        other.0 - self.0
    }

    /// The instant this day begins in Japan (00:00 JST).
    pub fn start(self) -> SystemTime {
        let secs = i64::from(self.0) * DAY_SECS - JST_OFFSET_SECS;
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    }

    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }

    /// Days since 1970-01-01, as the stored records keep a date.
    pub fn days_since_epoch(self) -> i32 {
        self.0
    }

    pub fn from_days_since_epoch(days: i32) -> Self {
        JapanDate(days)
    }
}

impl fmt::Display for JapanDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for JapanDate {
    type Err = IdError;
    /// `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = IdError {
            field: "date",
            rule: "must be a valid YYYY-MM-DD",
        };
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad);
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, IdError> {
            let part = &s[r];
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| bad.clone())
            } else {
                Err(bad.clone())
            }
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        JapanDate::from_ymd(y as i32, m, d).ok_or(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn japan_date_turns_at_15_utc() {
        // 2026-11-25T14:59:59Z is 23:59:59 JST on the 25th; one second later it is the 26th.
        let t = 1_795_618_799_u64; // 2026-11-25T14:59:59Z
        assert_eq!(JapanDate::of(utc(t)).to_string(), "2026-11-25");
        assert_eq!(JapanDate::of(utc(t + 1)).to_string(), "2026-11-26");
        assert_eq!(JapanDate::of(utc(t + 1)).start(), utc(t + 1));
    }

    #[test]
    fn dates_parse_and_print() {
        for s in ["2024-02-29", "1970-01-01", "2075-12-31", "1899-12-31"] {
            assert_eq!(s.parse::<JapanDate>().unwrap().to_string(), s);
        }
        for s in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "24-01-01",
            "2024/01/01",
            "+024-01-01",
        ] {
            assert!(s.parse::<JapanDate>().is_err(), "{s}");
        }
    }

    #[test]
    fn arithmetic() {
        let d: JapanDate = "2024-02-27".parse().unwrap();
        assert_eq!(d.add_days(3).to_string(), "2024-03-01");
        assert_eq!(d.days_until(d.add_days(3)), 3);
        assert_eq!(d.add_days(-58).to_string(), "2023-12-31");
    }
}
