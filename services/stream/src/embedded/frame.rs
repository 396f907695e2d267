//! Record framing in segment files: `len: u32 | crc32: u32 | body`, the CRC covering the length and the whole body.
//!
//! Body layout (little-endian): `format: u8 = 1 | offset: i64 | timestamp_ms: i64 |
//! key_len: u32 | key | value_len: u32 | value | n_headers: u32 |
//! (name_len: u32 | name | value_len: u32 | value)*`. The offset is stored so that recovery
//! and readers can check that a partition's offsets are contiguous.

use crate::record::{ConsumedRecord, OutgoingRecord};

/// Bytes before the body: length and CRC.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;
const FORMAT_VERSION: u8 = 1;
const MIN_BODY_BYTES: usize = 1 + 8 + 8 + 4 + 4 + 4;
/// A body larger than this is taken for a corrupt length, not a record.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 30;

/// The number of bytes `encode_frame` appends for this record.
pub(crate) fn frame_len(record: &OutgoingRecord) -> usize {
    FRAME_HEADER_BYTES
        + MIN_BODY_BYTES
        + record.key.len()
        + record.value.len()
        + record
            .headers
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
}

/// Appends the frame of `record` at `offset` to `out`. The caller checked
/// `frame_len(record) - FRAME_HEADER_BYTES <= MAX_BODY_BYTES`.
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    offset: i64,
    timestamp_ms: i64,
    record: &OutgoingRecord,
) {
    let start = out.len();
    out.reserve(frame_len(record));
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    put_bytes(out, &record.key);
    put_bytes(out, &record.value);
    out.extend_from_slice(&(record.headers.len() as u32).to_le_bytes());
    for (name, value) in &record.headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value);
    }
    let body_len = (out.len() - start - FRAME_HEADER_BYTES) as u32;
    let crc = frame_crc(body_len, &out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn frame_crc(body_len: u32, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&body_len.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// A decoded record borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RecordView<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    n_headers: usize,
    /// The validated header bytes, walked again by [`RecordView::headers`] (no
    /// allocation while scanning).
    header_bytes: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The headers, in order.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut cursor = BodyCursor {
            body: self.header_bytes,
            position: 0,
        };
        (0..self.n_headers).map_while(move |_| {
            let name = std::str::from_utf8(cursor.sized()?).ok()?;
            Some((name, cursor.sized()?))
        })
    }
}

impl RecordView<'_> {
    pub(crate) fn to_consumed(&self, topic: &str, partition: i32) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.to_owned(),
            partition,
            offset: self.offset,
            key: Some(self.key.to_vec()),
            value: Some(self.value.to_vec()),
            headers: self
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_vec()))
                .collect(),
            timestamp_ms: Some(self.timestamp_ms),
        }
    }
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole, checksummed record of `frame_len` bytes.
    Complete {
        frame_len: usize,
        record: RecordView<'a>,
    },
    /// The buffer ends inside a frame that needs `frame_len` bytes in all (the header
    /// alone when the length is not known yet). Not an error: read more.
    Incomplete { frame_len: usize },
    /// Not a record: a bad length, checksum or body layout.
    Invalid(String),
}

/// Parses the frame at the start of `buf`.
pub(crate) fn parse_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Frame::Incomplete {
            frame_len: FRAME_HEADER_BYTES,
        };
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let stored_crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body_len_usize = body_len as usize;
    if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&body_len_usize) {
        return Frame::Invalid(format!("impossible record length {body_len}"));
    }
    let frame_len = FRAME_HEADER_BYTES + body_len_usize;
    if buf.len() < frame_len {
        return Frame::Incomplete { frame_len };
    }
    let body = &buf[FRAME_HEADER_BYTES..frame_len];
    let computed_crc = frame_crc(body_len, body);
    if computed_crc != stored_crc {
        return Frame::Invalid(format!(
            "checksum mismatch (stored {stored_crc:#010x}, computed {computed_crc:#010x})"
        ));
    }
    match parse_body(body) {
        Some(record) => Frame::Complete { frame_len, record },
        None => Frame::Invalid("record body does not match its layout".to_owned()),
    }
}

fn parse_body(body: &[u8]) -> Option<RecordView<'_>> {
    let mut cursor = BodyCursor { body, position: 0 };
    if cursor.take(1)?[0] != FORMAT_VERSION {
        return None;
    }
    let offset = i64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
    let timestamp_ms = i64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
    let key = cursor.sized()?;
    let value = cursor.sized()?;
    let n_headers = cursor.u32()? as usize;
    // Each header takes at least 8 bytes, which bounds the allocation on a corrupt count.
    if n_headers > (body.len() - cursor.position) / 8 {
        return None;
    }
    let headers_start = cursor.position;
    for _ in 0..n_headers {
        std::str::from_utf8(cursor.sized()?).ok()?;
        cursor.sized()?;
    }
    let header_bytes = &body[headers_start..];
    if cursor.position != body.len() {
        return None;
    }
    Some(RecordView {
        offset,
        timestamp_ms,
        key,
        value,
        n_headers,
        header_bytes,
    })
}

struct BodyCursor<'a> {
    body: &'a [u8],
    position: usize,
}

impl<'a> BodyCursor<'a> {
    fn take(&mut self, n_bytes: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(n_bytes)?;
        let bytes = self.body.get(self.position..end)?;
        self.position = end;
        Some(bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn sized(&mut self) -> Option<&'a [u8]> {
        let n_bytes = self.u32()? as usize;
        self.take(n_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8], headers: &[(&str, &[u8])]) -> OutgoingRecord {
        OutgoingRecord {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
                .collect(),
        }
    }

    fn encoded(offset: i64, record: &OutgoingRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, offset, 1_700_000_000_000, record);
        out
    }

    /// Encodes `record`, applies `damage` to the bytes, and checks what parsing reports.
    fn check(record: &OutgoingRecord, damage: impl Fn(&mut Vec<u8>), expected: &str) {
        let mut bytes = encoded(7, record);
        damage(&mut bytes);
        let outcome = match parse_frame(&bytes) {
            Frame::Complete {
                frame_len,
                record: view,
            } => {
                assert_eq!(frame_len, bytes.len());
                assert_eq!(
                    view.to_consumed("t", 3).key.as_deref(),
                    Some(record.key.as_slice())
                );
                assert_eq!(view.value, record.value.as_slice());
                assert_eq!(view.offset, 7);
                let headers: Vec<(String, Vec<u8>)> = view
                    .headers()
                    .map(|(name, value)| (name.to_owned(), value.to_vec()))
                    .collect();
                assert_eq!(headers, record.headers);
                "complete".to_owned()
            }
            Frame::Incomplete { frame_len } => format!("incomplete {frame_len}"),
            Frame::Invalid(detail) => format!("invalid: {detail}"),
        };
        assert!(
            outcome.starts_with(expected),
            "expected {expected:?}, got {outcome:?}"
        );
    }

    #[test]
    fn frames_round_trip_and_damage_is_detected() {
        let plain = record("course-1", b"value", &[]);
        let with_headers = record(
            "k",
            &[0, 1, 2, 255],
            &[("bl-a", b"x"), ("bl-a", b""), ("", b"z")],
        );
        let empty = record("", b"", &[]);
        let len = frame_len(&plain);
        assert_eq!(encoded(0, &plain).len(), len);
        check(&plain, |_| {}, "complete");
        check(&with_headers, |_| {}, "complete");
        check(&empty, |_| {}, "complete");
        check(
            &plain,
            |bytes| bytes.truncate(len - 1),
            &format!("incomplete {len}"),
        );
        check(&plain, |bytes| bytes.truncate(3), "incomplete 8");
        check(&plain, |bytes| bytes[len - 1] ^= 1, "invalid: checksum");
        check(&plain, |bytes| bytes[5] ^= 1, "invalid: checksum");
        check(
            &plain,
            |bytes| bytes[0..4].copy_from_slice(&[0; 4]),
            "invalid: impossible record length 0",
        );
        check(
            &plain,
            |bytes| bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes()),
            "invalid: impossible",
        );
        // A zero-filled tail (a file extended without its data) is not a record.
        check(
            &plain,
            |bytes| bytes.iter_mut().for_each(|byte| *byte = 0),
            "invalid: impossible record length 0",
        );
    }

    #[test]
    fn consecutive_frames_parse_one_at_a_time() {
        let mut bytes = encoded(0, &record("a", b"1", &[]));
        bytes.extend(encoded(1, &record("b", b"22", &[("h", b"v")])));
        let Frame::Complete {
            frame_len,
            record: first,
        } = parse_frame(&bytes)
        else {
            panic!("first frame should parse");
        };
        assert_eq!(first.offset, 0);
        let Frame::Complete { record: second, .. } = parse_frame(&bytes[frame_len..]) else {
            panic!("second frame should parse");
        };
        assert_eq!((second.offset, second.value), (1, &b"22"[..]));
    }
}
