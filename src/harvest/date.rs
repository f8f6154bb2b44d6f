//! The `Date:` field (RFC 5322 §3.3 `date-time`, with the obsolete forms
//! of §4.3: CFWS between the tokens, two- and three-digit years, the
//! alphabetic zones) as Unix seconds, and the effective date of a message
//! as Autocrypt Level 1 defines it: the `Date:` time, or the time of
//! receipt when that is in the future or not available.
//!
//! A date that is not semantically valid (§3.3: the day of the week must
//! be the date's, the day must exist in the month, the time must be
//! within 00:00:00–23:59:60, the zone's minutes within 00–59) is refused,
//! as is a year before 1900 or after 9999. Military and unknown
//! alphabetic zones count as `-0000` (§4.3), i.e. UTC.

use std::time::SystemTime;

use super::lex::{Cursor, Unterminated};
use crate::backend::unix_seconds;
use crate::message::HeaderField;

/// Why a `Date:` value is not a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not the `date-time` grammar.
    #[error("not an RFC 5322 date-time ({0})")]
    Syntax(&'static str),
    /// Well-formed but not a real moment (31 Feb, 25:00, a wrong weekday).
    #[error("not a valid date ({0})")]
    Invalid(&'static str),
}

impl From<Unterminated> for DateError {
    fn from(_: Unterminated) -> Self {
        DateError::Syntax("unterminated comment")
    }
}

const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn word<'a>(c: &mut Cursor<'a>) -> &'a [u8] {
    c.take_while(|b| b.is_ascii_alphabetic())
}

/// 1 to `max` digits as a number.
fn number(
    c: &mut Cursor<'_>,
    min: usize,
    max: usize,
    what: &'static str,
) -> Result<u32, DateError> {
    let d = c.take_while(|b| b.is_ascii_digit());
    if d.len() < min || d.len() > max {
        return Err(DateError::Syntax(what));
    }
    Ok(d.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0')))
}

fn index_of(list: &[&[u8]], w: &[u8]) -> Option<usize> {
    // ABNF strings are case-insensitive (RFC 5234 §2.3).
    list.iter().position(|x| x.eq_ignore_ascii_case(w))
}

/// The zone's offset from UTC in seconds.
fn zone(c: &mut Cursor<'_>) -> Result<i64, DateError> {
    match c.peek() {
        Some(sign @ (b'+' | b'-')) => {
            c.bump();
            let d = c.take_while(|b| b.is_ascii_digit());
            if d.len() != 4 {
                return Err(DateError::Syntax("a zone of four digits"));
            }
            let n = |i: usize| i64::from(d[i] - b'0');
            let (hours, minutes) = (n(0) * 10 + n(1), n(2) * 10 + n(3));
            if minutes > 59 {
                return Err(DateError::Invalid("zone minutes over 59"));
            }
            let offset = hours * 3600 + minutes * 60;
            Ok(if sign == b'-' { -offset } else { offset })
        }
        Some(b) if b.is_ascii_alphabetic() => {
            let w = word(c).to_ascii_uppercase();
            Ok(match w.as_slice() {
                b"UT" | b"GMT" => 0,
                b"EDT" => -4 * 3600,
                b"EST" | b"CDT" => -5 * 3600,
                b"CST" | b"MDT" => -6 * 3600,
                b"MST" | b"PDT" => -7 * 3600,
                b"PST" => -8 * 3600,
                // Military and unknown zones: -0000 (§4.3).
                _ => 0,
            })
        }
        _ => Err(DateError::Syntax("a zone")),
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC): how
/// the `keys` command shows the store's times. The inverse of
/// `days_from_civil` (H. Hinnant's `civil_from_days`).
pub fn iso_utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// Parses a `Date:` value (raw, folds included) into Unix seconds.
pub fn parse(value: &[u8]) -> Result<i64, DateError> {
    let mut c = Cursor::new(value);
    c.cfws()?;
    // [ day-of-week "," ]
    let mut weekday = None;
    if c.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
        let w = word(&mut c);
        weekday = Some(index_of(&DAYS, w).ok_or(DateError::Syntax("a day name"))?);
        c.cfws()?;
        if !c.eat(b',') {
            return Err(DateError::Syntax("',' after the day name"));
        }
        c.cfws()?;
    }
    let day = number(&mut c, 1, 2, "a day of one or two digits")?;
    c.cfws()?;
    let w = word(&mut c);
    let month = index_of(&MONTHS, w).ok_or(DateError::Syntax("a month name"))? as u32 + 1;
    c.cfws()?;
    let digits = c.rest().iter().take_while(|b| b.is_ascii_digit()).count();
    let written = number(&mut c, 2, 4, "a year of two to four digits")?;
    let year = i64::from(match digits {
        2 if written < 50 => written + 2000,
        2 | 3 => written + 1900,
        _ => written,
    });
    if year < 1900 {
        return Err(DateError::Invalid("a year before 1900"));
    }
    c.cfws()?;
    let hour = number(&mut c, 2, 2, "an hour of two digits")?;
    c.cfws()?;
    if !c.eat(b':') {
        return Err(DateError::Syntax("':' after the hour"));
    }
    c.cfws()?;
    let minute = number(&mut c, 2, 2, "minutes of two digits")?;
    c.cfws()?;
    let mut second = 0;
    if c.eat(b':') {
        c.cfws()?;
        second = number(&mut c, 2, 2, "seconds of two digits")?;
        c.cfws()?;
    }
    let offset = zone(&mut c)?;
    c.cfws()?;
    if !c.at_end() {
        return Err(DateError::Syntax("the end after the zone"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(DateError::Invalid("no such day in the month"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(DateError::Invalid("no such time of day"));
    }
    let days = days_from_civil(year, month, day);
    if let Some(w) = weekday {
        // 1970-01-01 was a Thursday (index 3).
        if (days + 3).rem_euclid(7) != w as i64 {
            return Err(DateError::Invalid("the day of the week is not the date's"));
        }
    }
    let local = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(local - offset)
}

/// The effective date of a message (Autocrypt Level 1): its `Date:`,
/// unless that is in the future, absent or not a date; then `now`. With
/// several `Date:` fields (RFC 5322 allows one) the oldest date counts: a
/// field added to a signed message (DKIM covers the last instance) can
/// make it look older, never newer, so it cannot win the update rule.
pub fn effective(headers: &[HeaderField], now: SystemTime) -> i64 {
    let now = unix_seconds(now);
    headers
        .iter()
        .filter(|h| h.is("Date"))
        .filter_map(|h| parse(&h.value).ok())
        .min()
        .map_or(now, |t| t.min(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn p(s: &str) -> Result<i64, DateError> {
        parse(s.as_bytes())
    }

    #[test]
    fn current_form() {
        assert_eq!(p(" Tue, 06 Jan 2026 10:00:00 +0100"), Ok(1_767_690_000));
        assert_eq!(p("6 Jan 2026 09:00:00 +0000"), Ok(1_767_690_000));
        assert_eq!(p("Thu, 01 Jan 1970 00:00:00 -0000"), Ok(0));
        assert_eq!(p("Fri, 21 Nov 1997 09:55:06 -0600"), Ok(880_127_706));
        // Leap second and leap day.
        assert_eq!(p("31 Dec 2016 23:59:60 +0000"), Ok(1_483_228_800));
        assert_eq!(p("29 Feb 2024 00:00 +0000"), Ok(1_709_164_800));
    }

    #[test]
    fn obsolete_forms() {
        // RFC 5322 Appendix A.6.2 (obsolete dates), and comments anywhere.
        assert_eq!(p("21 Nov 97 09:55:06 GMT"), Ok(880_106_106));
        assert_eq!(
            p(
                "Thu,\r\n      13\r\n        Feb\r\n          1969\r\n      23:32\r\n               -0330 (Newfoundland Time)"
            ),
            Ok(-27_723_480)
        );
        assert_eq!(
            p("(c) 1 (c) jan (c) 49 (c) 00 (c) : (c) 00 (c) z"),
            p("1 Jan 2049 00:00 +0000")
        );
        assert_eq!(p("1 Jan 50 00:00 UT"), p("1 Jan 1950 00:00 +0000"));
        assert_eq!(p("1 Jan 100 00:00 UT"), p("1 Jan 2000 00:00 +0000"));
        assert_eq!(p("1 Jan 2000 00:00 EST"), p("1 Jan 2000 00:00 -0500"));
        assert_eq!(p("1 Jan 2000 00:00 PDT"), p("1 Jan 2000 00:00 -0700"));
        assert_eq!(p("1 Jan 2000 00:00 CEST"), p("1 Jan 2000 00:00 +0000"));
        assert_eq!(p("mon, 3 jan 2000 00:00 ut"), p("3 Jan 2000 00:00 +0000"));
    }

    #[test]
    fn garbage_and_impossible_dates() {
        for s in [
            "",
            "yesterday",
            "Fri, Feb 15 2002 16:54:30 -0800",
            "Tue, 07 Jan 2026 10:00:00 +0100",
            "31 Feb 2024 00:00 +0000",
            "29 Feb 2023 00:00 +0000",
            "0 Jan 2024 00:00 +0000",
            "1 Jan 2024 24:00 +0000",
            "1 Jan 2024 23:60 +0000",
            "1 Jan 2024 23:59:61 +0000",
            "1 Jan 2024 00:00 +0060",
            "1 Jan 2024 00:00 +01",
            "1 Jan 2024 00:00",
            "1 Jan 1899 00:00 +0000",
            "1 Jan 12345 00:00 +0000",
            "1 Jan 2024 00:00 +0000 trailing",
            "1 Jan 2024 0:00 +0000",
            "123 Jan 2024 00:00 +0000",
            "1 Jan 2024 00:00 +0000 (unterminated",
            "Xyz, 1 Jan 2024 00:00 +0000",
            "Mon 1 Jan 2024 00:00 +0000",
        ] {
            assert!(p(s).is_err(), "{s:?} accepted");
        }
        // Large offsets stay in range.
        assert_eq!(
            p("1 Jan 9999 23:59:59 -9959"),
            Ok(253_370_851_199 + 99 * 3600 + 59 * 60)
        );
    }

    #[test]
    fn effective_date_is_clamped_to_now_and_falls_back_to_it() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |dates: &[&str]| {
            let h: Vec<HeaderField> = dates.iter().map(|d| HeaderField::new("Date", *d)).collect();
            effective(&h, now)
        };
        assert_eq!(at(&[" Tue, 06 Jan 2026 10:00:00 +0100"]), 1_767_690_000);
        assert_eq!(at(&[" Tue, 01 Jan 2999 00:00:00 +0000"]), 1_800_000_000);
        assert_eq!(at(&[]), 1_800_000_000);
        assert_eq!(at(&[" garbage"]), 1_800_000_000);
        // Several: the oldest that is a date.
        assert_eq!(
            at(&[
                " 7 Jan 2026 09:00 +0000",
                " garbage",
                " 6 Jan 2026 09:00 +0000"
            ]),
            1_767_690_000
        );
        assert_eq!(at(&[" garbage", " (none)"]), 1_800_000_000);
    }
}
