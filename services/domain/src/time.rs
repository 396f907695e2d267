//! Tutor's datetimes (docs/design/api.md §1.6), parsed and formatted with the `time` crate: pure
//! calendar arithmetic, no clock.
//!
//! The accepted form is the schema's regex, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (UTC only, `T`
//! and `Z` in either case, at most 6 fractional digits), and a real calendar date:
//! `2017-02-31` is refused with its own error so that the request's 400 says why.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The shape of §1.6 for the `time` parser (the leap second is handled before it).
const TUTOR_DATETIME: &[BorrowedFormatItem<'static>] = format_description!(
    version = 2,
    "[year]-[month]-[day][first [T] [t]][hour]:[minute]:[second][optional [.[subsecond digits:1+]]][first [Z] [z]]"
);

/// How every formatted datetime looks: always 6 fractional digits, `Z`.
const FORMATTED: &[BorrowedFormatItem<'static>] = format_description!(
    version = 2,
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// At most this many fractional digits (microseconds).
const MAX_FRACTION_DIGITS: usize = 6;

/// Why a text is not a Tutor datetime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatetimeError {
    /// Not of the form of §1.6 (or a field out of its range, such as hour 24).
    #[error("expected a UTC datetime YYYY-MM-DDTHH:MM:SS[.ffffff]Z (at most 6 fractional digits)")]
    Format,
    /// Of the right form, but the day does not exist in that month (`2017-02-31`).
    #[error("{date} is not a calendar date (that month has fewer days)")]
    NoSuchDate {
        /// The `YYYY-MM-DD` part of the text.
        date: String,
    },
}

/// Parses a Tutor datetime to microseconds since the Unix epoch. Second 60 (a leap second,
/// which the format allows at any minute) is read as 59.999999.
pub fn parse_datetime(text: &str) -> Result<i64, DatetimeError> {
    // The `time` parser takes a sign before the year; the schema wants 4 digits.
    if !text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return Err(DatetimeError::Format);
    }
    let fraction_digits = text.split_once('.').map_or(0, |(_, rest)| {
        rest.bytes().take_while(u8::is_ascii_digit).count()
    });
    if fraction_digits > MAX_FRACTION_DIGITS {
        return Err(DatetimeError::Format);
    }
    // `time` has no second 60: parse it as 59 and read the instant as 59.999999.
    let leap = text.get(17..19) == Some("60") && text.get(16..17) == Some(":");
    let parsed = if leap {
        let mut shifted = String::with_capacity(text.len());
        shifted.push_str(&text[..17]);
        shifted.push_str("59");
        shifted.push_str(&text[19..]);
        PrimitiveDateTime::parse(&shifted, TUTOR_DATETIME)
    } else {
        PrimitiveDateTime::parse(text, TUTOR_DATETIME)
    };
    let datetime =
        parsed.map_err(|error| match error {
            time::error::Parse::TryFromParsed(time::error::TryFromParsed::ComponentRange(
                range,
            )) if range.name() == "day" => DatetimeError::NoSuchDate {
                date: text[..10].to_owned(),
            },
            _ => DatetimeError::Format,
        })?;
    let datetime = if leap {
        datetime
            .replace_microsecond(999_999)
            .expect("999 999 µs is a valid microsecond")
    } else {
        datetime
    };
    let nanos = datetime.assume_utc().unix_timestamp_nanos();
    Ok(i64::try_from(nanos / 1_000).expect("years 0000..=9999 fit in i64 microseconds"))
}

/// [`parse_datetime`], without the reason.
pub fn parse_datetime_micros(text: &str) -> Option<i64> {
    parse_datetime(text).ok()
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Instants outside
/// years 0000..=9999 (which no parsed datetime and no clock produces) are clamped to them.
pub fn format_datetime_micros(micros: i64) -> String {
    let min = OffsetDateTime::new_utc(
        time::Date::from_calendar_date(0, time::Month::January, 1).expect("a calendar date"),
        time::Time::MIDNIGHT,
    );
    let max = OffsetDateTime::new_utc(
        time::Date::from_calendar_date(9999, time::Month::December, 31).expect("a calendar date"),
        time::Time::from_hms_micro(23, 59, 59, 999_999).expect("a time of day"),
    );
    let nanos = i128::from(micros) * 1_000;
    let datetime = OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(if micros < 0 { min } else { max })
        .clamp(min, max);
    datetime
        .format(FORMATTED)
        .expect("every instant of years 0000..=9999 formats")
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
        check("2017-06-27T23:26:48.9861Z", Some(1_498_606_008_986_100));
        check("2016-12-31T23:59:60Z", Some(1_483_228_799_999_999));
        check("2016-12-31T23:59:60.25Z", Some(1_483_228_799_999_999));
        check("2017-06-27T12:30:60Z", Some(1_498_566_659_999_999));
        check("1969-12-31T23:59:59Z", Some(-1_000_000));
        check("2016-02-29T00:00:00Z", Some(1_456_704_000_000_000));
        check("2000-02-29T00:00:00Z", Some(951_782_400_000_000));
        check("0000-01-01T00:00:00Z", Some(-62_167_219_200_000_000));
        check("9999-12-31T23:59:59.999999Z", Some(253_402_300_799_999_999));
    }

    #[test]
    fn every_recorded_tutor_datetime_shape_parses() {
        // The shapes of testdata/biglearn-api: seconds, milliseconds and microseconds.
        check("2017-06-27T23:26:48Z", Some(1_498_606_008_000_000));
        check("2017-06-27T23:26:48.986Z", Some(1_498_606_008_986_000));
        check("2017-06-27T23:26:48.986123Z", Some(1_498_606_008_986_123));
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        for text in [
            "2017-06-27T23:26:48+00:00",
            "2017-06-27T23:26:48.1234567Z",
            "2017-13-27T23:26:48Z",
            "2017-06-27 23:26:48Z",
            "2017-06-27T24:00:00Z",
            "2017-06-27T23:26:48.Z",
            "2017-06-27T23:26:61Z",
            "2017-06-27T23:60:00Z",
            "2017-06-32T23:26:48Z",
            "2017-06-00T23:26:48Z",
            "+2017-06-27T23:26:48Z",
            "-2017-06-27T23:26:48Z",
            "12017-06-27T23:26:48Z",
            "217-06-27T23:26:48Z",
            "2017-6-27T23:26:48Z",
            "2017-06-27T23:26:48ZZ",
            "2017-06-27T23:26:48",
            "2017-06-27",
            "",
            "２017-06-27T23:26:48Z",
        ] {
            assert_eq!(parse_datetime(text), Err(DatetimeError::Format), "{text}");
        }
    }

    #[test]
    fn refuses_days_a_month_does_not_have() {
        for (text, date) in [
            ("2017-02-31T00:00:00Z", "2017-02-31"),
            ("2017-02-29T00:00:00Z", "2017-02-29"),
            ("1900-02-29T00:00:00Z", "1900-02-29"),
            ("2017-04-31T12:00:00.5Z", "2017-04-31"),
            ("2017-11-31t00:00:60z", "2017-11-31"),
        ] {
            assert_eq!(
                parse_datetime(text),
                Err(DatetimeError::NoSuchDate {
                    date: date.to_owned()
                }),
                "{text}"
            );
        }
        assert_eq!(
            DatetimeError::NoSuchDate {
                date: "2017-02-31".into()
            }
            .to_string(),
            "2017-02-31 is not a calendar date (that month has fewer days)"
        );
    }

    #[test]
    fn formatting_round_trips() {
        for micros in [
            0,
            1_498_606_008_986_100,
            -1_000_000,
            4_102_444_800_000_000,
            -62_167_219_200_000_000,
            253_402_300_799_999_999,
        ] {
            assert_eq!(
                parse_datetime_micros(&format_datetime_micros(micros)),
                Some(micros)
            );
        }
        assert_eq!(
            format_datetime_micros(1_498_606_008_986_100),
            "2017-06-27T23:26:48.986100Z"
        );
        assert_eq!(format_datetime_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn formatting_clamps_instants_beyond_year_9999() {
        assert_eq!(
            format_datetime_micros(i64::MAX),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            format_datetime_micros(i64::MIN),
            "0000-01-01T00:00:00.000000Z"
        );
    }
}
