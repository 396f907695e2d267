//! Parsing of Tutor's datetimes (spec api.md §1.6) without a clock: pure date arithmetic.

/// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (UTC only, at most 6 fractional digits) to
/// microseconds since the Unix epoch. Second 60 is read as 59.999999.
pub fn parse_datetime_micros(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut value = 0i64;
        for &byte in bytes.get(range)? {
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(byte - b'0');
        }
        Some(value)
    };
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    let second = digits(17..19)?;
    if bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let rest = &bytes[19..];
    let (fraction_micros, zone) = match rest.first() {
        Some(b'.') => {
            let n_digits = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if !(1..=6).contains(&n_digits) {
                return None;
            }
            let mut micros = digits(20..20 + n_digits)?;
            for _ in n_digits..6 {
                micros *= 10;
            }
            (micros, &rest[1 + n_digits..])
        }
        _ => (0, rest),
    };
    if zone != b"Z" && zone != b"z" {
        return None;
    }
    let (second, fraction_micros) = if second == 60 {
        (59, 999_999)
    } else {
        (second, fraction_micros)
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + fraction_micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_datetime_micros(micros: i64) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let micros_of_day = micros.rem_euclid(86_400_000_000);
    let (year, month, day) = civil_from_days(days);
    let seconds = micros_of_day / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60,
        micros_of_day % 1_000_000
    )
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<i64>) {
        assert_eq!(parse_datetime_micros(text), expected, "{text}");
    }

    #[test]
    fn parses_tutor_datetimes() {
        check("1970-01-01T00:00:00Z", Some(0));
        check("1970-01-01T00:00:01.5Z", Some(1_500_000));
        check("2017-06-27T23:26:48.986100Z", Some(1_498_606_008_986_100));
        check("2017-06-27t23:26:48.986100z", Some(1_498_606_008_986_100));
        check("2016-12-31T23:59:60Z", Some(1_483_228_799_999_999));
        check("1969-12-31T23:59:59Z", Some(-1_000_000));
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        check("2017-06-27T23:26:48+00:00", None);
        check("2017-06-27T23:26:48.1234567Z", None);
        check("2017-13-27T23:26:48Z", None);
        check("2017-06-27 23:26:48Z", None);
        check("2017-06-27T24:00:00Z", None);
        check("2017-06-27T23:26:48.Z", None);
    }

    #[test]
    fn formatting_round_trips() {
        for micros in [0, 1_498_606_008_986_100, -1_000_000, 4_102_444_800_000_000] {
            assert_eq!(
                parse_datetime_micros(&format_datetime_micros(micros)),
                Some(micros)
            );
        }
    }
}
