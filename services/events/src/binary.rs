//! Avro binary primitives (zig-zag varints, length-prefixed strings, union indexes, array blocks), for the schema-specific codecs.

use uuid::Uuid;

use crate::error::DecodeError;

/// Appends Avro binary values to a buffer.
pub(crate) struct AvroWriter {
    pub(crate) buf: Vec<u8>,
}

impl AvroWriter {
    pub(crate) fn with_buffer(buf: Vec<u8>) -> AvroWriter {
        AvroWriter { buf }
    }

    pub(crate) fn long(&mut self, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            self.buf.push((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        self.buf.push(zigzag as u8);
    }

    pub(crate) fn int(&mut self, value: i32) {
        self.long(i64::from(value));
    }

    pub(crate) fn boolean(&mut self, value: bool) {
        self.buf.push(u8::from(value));
    }

    /// An IEEE 754 double, 8 bytes little-endian.
    pub(crate) fn double(&mut self, value: f64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.long(value.len() as i64);
        self.buf.extend_from_slice(value);
    }

    pub(crate) fn string(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    /// A `string` with logicalType `uuid`: always the 36-byte lower-case form.
    pub(crate) fn uuid(&mut self, value: Uuid) {
        const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b'-'; 37];
        text[0] = 0x48; // the length prefix 36, zig-zag encoded
        for (byte, pos) in value.as_bytes().iter().zip(DIGIT_POSITIONS) {
            text[1 + pos] = HEX_DIGITS[usize::from(byte >> 4)];
            text[2 + pos] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        self.buf.extend_from_slice(&text);
    }

    /// A union branch index or an enum symbol index.
    pub(crate) fn index(&mut self, idx: usize) {
        self.long(idx as i64);
    }

    /// `["null", T]`: branch 0 for `None`, branch 1 then the value for `Some`.
    pub(crate) fn optional<T>(&mut self, value: Option<&T>, write: impl FnOnce(&mut Self, &T))
    where
        T: ?Sized,
    {
        match value {
            None => self.index(0),
            Some(inner) => {
                self.index(1);
                write(self, inner);
            }
        }
    }

    /// One block holding every item, then the empty end block.
    pub(crate) fn array<T>(&mut self, items: &[T], mut write: impl FnMut(&mut Self, &T)) {
        if !items.is_empty() {
            self.long(items.len() as i64);
            for item in items {
                write(self, item);
            }
        }
        self.long(0);
    }
}

/// Where each uuid byte's two hex digits start in the hyphenated form.
const DIGIT_POSITIONS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// Hex digit values, 0xff for non-digits; both cases.
const HEX_VALUES: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut idx = 0;
    while idx < 10 {
        table[b'0' as usize + idx] = idx as u8;
        idx += 1;
    }
    idx = 0;
    while idx < 6 {
        table[b'a' as usize + idx] = 10 + idx as u8;
        table[b'A' as usize + idx] = 10 + idx as u8;
        idx += 1;
    }
    table
};

/// Parses the 36-byte `8-4-4-4-12` form of any case; faster than `Uuid::try_parse_ascii`,
/// which matters because a `record_response` carries nine uuids.
fn parse_hyphenated(text: &[u8]) -> Option<Uuid> {
    let text: &[u8; 36] = text.try_into().ok()?;
    if text[8] != b'-' || text[13] != b'-' || text[18] != b'-' || text[23] != b'-' {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut invalid = 0u8;
    for (byte, pos) in bytes.iter_mut().zip(DIGIT_POSITIONS) {
        let high = HEX_VALUES[text[pos] as usize];
        let low = HEX_VALUES[text[pos + 1] as usize];
        // 0xff marks a non-digit; OR-ing keeps the check out of the loop.
        invalid |= high | low;
        *byte = (high << 4) | (low & 0x0f);
    }
    (invalid & 0xf0 == 0).then(|| Uuid::from_bytes(bytes))
}

/// Reads Avro binary values from a byte slice; every failure is a [`DecodeError::Undecodable`].
pub(crate) struct AvroReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> AvroReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> AvroReader<'a> {
        AvroReader { bytes, pos: 0 }
    }

    fn fail(&self, what: &str) -> DecodeError {
        DecodeError::Undecodable {
            detail: format!("avro body, at byte {}: {what}", self.pos),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(self.fail(&format!("needs {len} bytes, {} remain", self.remaining())));
        }
        let taken = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(taken)
    }

    pub(crate) fn long(&mut self) -> Result<i64, DecodeError> {
        // Most longs here (lengths, indexes, small numbers) are one byte.
        if let Some(&byte) = self.bytes.get(self.pos) {
            if byte < 0x80 {
                self.pos += 1;
                return Ok(i64::from(byte >> 1) ^ -i64::from(byte & 1));
            }
        }
        let mut zigzag: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(self.fail("truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(self.fail("varint overflows a long"));
            }
            zigzag |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64));
            }
        }
        Err(self.fail("varint longer than 10 bytes"))
    }

    pub(crate) fn int(&mut self) -> Result<i32, DecodeError> {
        let value = self.long()?;
        i32::try_from(value).map_err(|_| self.fail("int out of range"))
    }

    pub(crate) fn boolean(&mut self) -> Result<bool, DecodeError> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(self.fail("boolean byte is neither 0 nor 1")),
        }
    }

    /// An IEEE 754 double, 8 bytes little-endian.
    pub(crate) fn double(&mut self) -> Result<f64, DecodeError> {
        let bytes = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(f64::from_le_bytes(array))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| self.fail("negative length"))?;
        self.take(len)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.bytes()?;
        std::str::from_utf8(raw).map_err(|_| self.fail("string is not UTF-8"))
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// A `string` with logicalType `uuid`, in the hyphenated form of any case.
    pub(crate) fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        // Fast path: the length prefix 36 is the single byte 0x48.
        if let Some(raw) = self.bytes.get(self.pos + 1..self.pos + 37) {
            if self.bytes[self.pos] == 0x48 {
                if let Some(uuid) = parse_hyphenated(raw) {
                    self.pos += 37;
                    return Ok(uuid);
                }
            }
        }
        let raw = self.bytes()?;
        parse_hyphenated(raw).ok_or_else(|| self.fail("not a 36-character hyphenated uuid"))
    }

    /// A union branch index or an enum symbol index below `n_choices`.
    pub(crate) fn index(&mut self, n_choices: usize) -> Result<usize, DecodeError> {
        let idx = self.long()?;
        usize::try_from(idx)
            .ok()
            .filter(|idx| *idx < n_choices)
            .ok_or_else(|| self.fail(&format!("index {idx} not below {n_choices}")))
    }

    /// `["null", T]`.
    pub(crate) fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.index(2)? {
            0 => Ok(None),
            _ => read(self).map(Some),
        }
    }

    /// An array in any block layout, including negative counts with byte sizes.
    ///
    /// Every item of this crate's schemas takes at least one byte, so a count larger
    /// than the remaining bytes is rejected before any allocation.
    pub(crate) fn array<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut items = Vec::new();
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(items);
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                self.long()?;
            }
            let count = count.unsigned_abs();
            if count > self.remaining() as u64 {
                return Err(self.fail("array block count exceeds the remaining bytes"));
            }
            items.reserve(count as usize);
            for _ in 0..count {
                items.push(read(self)?);
            }
        }
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.fail(&format!("{} trailing bytes", self.remaining())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_long(value: i64, expected: &[u8]) {
        let mut writer = AvroWriter::with_buffer(Vec::new());
        writer.long(value);
        assert_eq!(writer.buf, expected, "encoding {value}");
        let mut reader = AvroReader::new(expected);
        assert_eq!(reader.long().unwrap(), value);
        reader.finish().unwrap();
    }

    #[test]
    fn longs_are_zigzag_varints() {
        check_long(0, &[0x00]);
        check_long(-1, &[0x01]);
        check_long(1, &[0x02]);
        check_long(-64, &[0x7f]);
        check_long(64, &[0x80, 0x01]);
        check_long(
            i64::MAX,
            &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        );
        check_long(
            i64::MIN,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        );
    }

    #[test]
    fn malformed_primitives_are_errors() {
        let overlong = [0xff; 11];
        assert!(AvroReader::new(&overlong).long().is_err());
        assert!(AvroReader::new(&[0x80]).long().is_err());
        assert!(AvroReader::new(&[0x02]).boolean().is_err());
        assert!(AvroReader::new(&[0x02]).string().is_err());
        assert!(AvroReader::new(&[0x01]).string().is_err());
        assert!(AvroReader::new(&[0x04, 0xff, 0xfe]).str().is_err());
        assert!(AvroReader::new(&[0x04]).index(2).is_err());
        // A huge block count must fail before it allocates.
        let huge = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(AvroReader::new(&huge).array(|r| r.boolean()).is_err());
    }

    #[test]
    fn uuids_are_written_lower_case_hyphenated() {
        for text in [
            "581DF776-A323-44BD-8CB1-346CD664B974",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ] {
            let uuid = Uuid::parse_str(text).unwrap();
            let mut writer = AvroWriter::with_buffer(Vec::new());
            writer.uuid(uuid);
            let mut expected = AvroWriter::with_buffer(Vec::new());
            expected.string(&text.to_lowercase());
            assert_eq!(writer.buf, expected.buf);
            assert_eq!(AvroReader::new(&writer.buf).uuid().unwrap(), uuid);
        }
    }

    #[test]
    fn uuids_parse_only_in_the_hyphenated_form() {
        let check = |text: &str, expected: Option<&str>| {
            let parsed = parse_hyphenated(text.as_bytes());
            assert_eq!(
                parsed,
                expected.map(|e| Uuid::parse_str(e).unwrap()),
                "{text}"
            );
        };
        check(
            "581df776-a323-44bd-8cb1-346cd664b974",
            Some("581df776-a323-44bd-8cb1-346cd664b974"),
        );
        check(
            "581DF776-A323-44BD-8CB1-346CD664B974",
            Some("581df776-a323-44bd-8cb1-346cd664b974"),
        );
        check(
            "00000000-0000-0000-0000-000000000000",
            Some("00000000-0000-0000-0000-000000000000"),
        );
        check(
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        );
        check("581df776-a323-44bd-8cb1-346cd664b97g", None);
        check("581df776-a323-44bd-8cb1x346cd664b974", None);
        check("581df776a32344bd8cb1346cd664b974", None);
        check("{581df776-a323-44bd-8cb1-346cd664b9}", None);
        check("581df776-a323-44bd-8cb1-346cd664b97", None);
        check("581df776-a323-44bd-8cb1-346cd664b9 4", None);
    }

    #[test]
    fn arrays_accept_negative_block_counts() {
        // Two blocks: count -2 with byte size 2, then count 1, then the end block.
        let bytes = [0x03, 0x04, 0x01, 0x00, 0x02, 0x01, 0x00];
        let mut reader = AvroReader::new(&bytes);
        assert_eq!(
            reader.array(|r| r.boolean()).unwrap(),
            vec![true, false, true]
        );
        reader.finish().unwrap();
    }
}
