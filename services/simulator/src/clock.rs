//! Simulated time: microseconds since the Unix epoch, formatted as Tutor's ISO-8601 UTC strings.

/// Microseconds in one second, hour, day and week of simulated time.
pub const SECOND: i64 = 1_000_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;
pub const WEEK: i64 = 7 * DAY;

/// Formats `micros` (since the Unix epoch, UTC) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`,
/// the shape of every timestamp in the recorded Tutor requests.
pub fn format_micros(micros: i64) -> String {
    let days = micros.div_euclid(DAY);
    let in_day = micros.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(days);
    let hour = in_day / HOUR;
    let minute = (in_day % HOUR) / MINUTE;
    let second = (in_day % MINUTE) / SECOND;
    let fraction = in_day % SECOND;
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:06}Z")
}

/// Parses `YYYY-MM-DD` or a full `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` into microseconds since the epoch.
/// Returns `None` for anything else (the CLI reports the bad value).
pub fn parse_date_or_datetime(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i64 = text.get(0..4)?.parse().ok()?;
    let month: i64 = text.get(5..7)?.parse().ok()?;
    let day: i64 = text.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut micros = days_from_civil(year, month, day) * DAY;
    if text.len() == 10 {
        return Some(micros);
    }
    let rest = text.get(10..)?;
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix('t'))?;
    let rest = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z'))?;
    let (clock, fraction) = match rest.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (rest, None),
    };
    let mut parts = clock.split(':');
    let hour: i64 = parts.next()?.parse().ok()?;
    let minute: i64 = parts.next()?.parse().ok()?;
    let second: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    micros += hour * HOUR + minute * MINUTE + second * SECOND;
    if let Some(fraction) = fraction {
        if fraction.is_empty()
            || fraction.len() > 6
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let padded = format!("{fraction:0<6}");
        micros += padded.parse::<i64>().ok()?;
    }
    Some(micros)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (the well-known era-based conversion).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01; the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected_micros: Option<i64>) {
        assert_eq!(parse_date_or_datetime(text), expected_micros, "{text}");
        if let Some(micros) = expected_micros {
            if text.len() > 10 {
                assert_eq!(parse_date_or_datetime(&format_micros(micros)), Some(micros));
            }
        }
    }

    #[test]
    fn dates_round_trip() {
        check("1970-01-01", Some(0));
        check("1970-01-02T00:00:00Z", Some(DAY));
        check("2017-06-27T23:26:45.704487Z", Some(1_498_606_005_704_487));
        check("2000-02-29T12:00:00.5Z", Some(951_825_600_500_000));
        check("1969-12-31T23:59:59.999999Z", Some(-1));
        check("2017-13-01", None);
        check("2017-06-27T23:26:45+02:00", None);
        check("yesterday", None);
    }

    #[test]
    fn format_matches_recorded_shape() {
        assert_eq!(
            format_micros(1_498_606_005_704_487),
            "2017-06-27T23:26:45.704487Z"
        );
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999999Z");
    }
}
