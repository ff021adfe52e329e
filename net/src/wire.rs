//! Checked primitives of the Kafka wire format: a reader that never reads past its input nor
//! allocates from an unchecked length, and writers for the same primitives.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::CodecError;

/// The longest unsigned varint that fits in a `u32`.
const UVARINT_LEN_MAX: usize = 5;

/// The longest string the protocol allows.
const STRING_LEN_MAX: usize = i16::MAX as usize;

/// Reads primitives from the front of a frame. Byte and string fields are zero-copy slices.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The bytes not yet read.
    pub(crate) fn rest(self) -> Bytes {
        self.buf
    }

    fn need(&self, len: usize) -> Result<(), CodecError> {
        if self.buf.len() < len {
            return Err(CodecError::Truncated);
        }
        Ok(())
    }

    pub(crate) fn i8(&mut self) -> Result<i8, CodecError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }

    pub(crate) fn i16(&mut self) -> Result<i16, CodecError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, CodecError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    pub(crate) fn i64(&mut self) -> Result<i64, CodecError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    pub(crate) fn uvarint(&mut self) -> Result<u32, CodecError> {
        let mut value: u32 = 0;
        for index in 0..UVARINT_LEN_MAX {
            let byte = self.i8()? as u8;
            let shift = 7 * index as u32;
            // The fifth byte may carry only the top four bits of a u32.
            if index == UVARINT_LEN_MAX - 1 && byte > 0x0f {
                return Err(CodecError::Malformed("varint overflows u32"));
            }
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed("varint overflows u32"))
    }

    /// Takes `len` bytes as a slice of the frame (no copy).
    pub(crate) fn bytes(&mut self, len: usize) -> Result<Bytes, CodecError> {
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }

    /// A length that may be null: `i16`/`i32` with -1 for null, or a compact `uvarint` of len + 1.
    fn nullable_len(&mut self, compact: bool, wide: bool) -> Result<Option<usize>, CodecError> {
        let len = if compact {
            i64::from(self.uvarint()?) - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match len {
            -1 => Ok(None),
            len if len < 0 => Err(CodecError::Malformed("negative length")),
            len => {
                let len = usize::try_from(len).map_err(|_| CodecError::Truncated)?;
                self.need(len)?;
                Ok(Some(len))
            }
        }
    }

    pub(crate) fn nullable_string(&mut self, compact: bool) -> Result<Option<String>, CodecError> {
        match self.nullable_len(compact, false)? {
            None => Ok(None),
            // Kafka strings hold at most i16::MAX bytes even where a compact length could say
            // more; refusing longer ones here means every decoded string can be echoed back.
            Some(len) if len > STRING_LEN_MAX => {
                Err(CodecError::Malformed("string longer than i16::MAX"))
            }
            Some(len) => {
                let raw = self.bytes(len)?;
                let text = std::str::from_utf8(&raw)
                    .map_err(|_| CodecError::Malformed("string is not utf-8"))?;
                Ok(Some(text.to_owned()))
            }
        }
    }

    pub(crate) fn string(&mut self, compact: bool) -> Result<String, CodecError> {
        self.nullable_string(compact)?
            .ok_or(CodecError::Malformed("null in a non-nullable string"))
    }

    pub(crate) fn nullable_bytes(&mut self, compact: bool) -> Result<Option<Bytes>, CodecError> {
        match self.nullable_len(compact, true)? {
            None => Ok(None),
            Some(len) => Ok(Some(self.bytes(len)?)),
        }
    }

    /// The element count of a non-nullable array. Each element takes at least
    /// `element_len_min` bytes, so a count the remaining bytes cannot hold is refused before
    /// anyone allocates for it.
    pub(crate) fn array_len(
        &mut self,
        compact: bool,
        element_len_min: usize,
    ) -> Result<usize, CodecError> {
        debug_assert!(element_len_min > 0);
        let count = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        // Kafka writes an empty array for a null one in some places; accept null as empty.
        if count == -1 {
            return Ok(0);
        }
        if count < 0 {
            return Err(CodecError::Malformed("negative array length"));
        }
        let count = usize::try_from(count).map_err(|_| CodecError::Truncated)?;
        if count > self.remaining() / element_len_min {
            return Err(CodecError::Truncated);
        }
        Ok(count)
    }

    /// Skips the tagged fields of a flexible struct; none of the fields we decode by hand
    /// carry tags we need.
    pub(crate) fn skip_tagged_fields(&mut self) -> Result<(), CodecError> {
        let count = self.uvarint()?;
        // Each tagged field takes at least two bytes (tag and size).
        if count as usize > self.remaining() / 2 {
            return Err(CodecError::Truncated);
        }
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.need(size)?;
            self.buf.advance(size);
        }
        Ok(())
    }
}

/// Writers for the same primitives, into a growing buffer.
pub(crate) fn put_uvarint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Writes a non-null string: `i16` length, or compact `uvarint` length + 1.
pub(crate) fn put_string(buf: &mut BytesMut, text: &str, compact: bool) {
    put_nullable_string(buf, Some(text), compact);
}

pub(crate) fn put_nullable_string(buf: &mut BytesMut, text: Option<&str>, compact: bool) {
    match text {
        None if compact => put_uvarint(buf, 0),
        None => buf.put_i16(-1),
        Some(text) => {
            // Kafka strings are at most i16::MAX bytes; names longer than that are refused
            // long before they are encoded.
            assert!(
                text.len() <= i16::MAX as usize,
                "string too long for the wire"
            );
            if compact {
                put_uvarint(buf, text.len() as u32 + 1);
            } else {
                buf.put_i16(text.len() as i16);
            }
            buf.put_slice(text.as_bytes());
        }
    }
}

/// Writes an array length: `i32`, or compact `uvarint` count + 1.
pub(crate) fn put_array_len(buf: &mut BytesMut, count: usize, compact: bool) {
    let count = u32::try_from(count).expect("array too long for the wire");
    if compact {
        put_uvarint(buf, count + 1);
    } else {
        buf.put_i32(count as i32);
    }
}

/// Writes an empty tagged-field section.
pub(crate) fn put_empty_tags(buf: &mut BytesMut) {
    put_uvarint(buf, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_uvarint(value: u32, expected: &[u8]) {
        let mut buf = BytesMut::new();
        put_uvarint(&mut buf, value);
        assert_eq!(&buf[..], expected);
        let mut reader = Reader::new(buf.freeze());
        assert_eq!(reader.uvarint().unwrap(), value);
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn uvarints() {
        check_uvarint(0, &[0]);
        check_uvarint(1, &[1]);
        check_uvarint(127, &[0x7f]);
        check_uvarint(128, &[0x80, 0x01]);
        check_uvarint(300, &[0xac, 0x02]);
        check_uvarint(u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn uvarint_overflow_is_refused() {
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x1f]));
        assert!(reader.uvarint().is_err());
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff]));
        assert_eq!(reader.uvarint(), Err(CodecError::Truncated));
    }

    #[test]
    fn array_len_is_checked_against_remaining() {
        let mut reader = Reader::new(Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0]));
        assert_eq!(reader.array_len(false, 1), Err(CodecError::Truncated));
        let mut reader = Reader::new(Bytes::from_static(&[0, 0, 0, 2, 0, 0]));
        assert_eq!(reader.array_len(false, 1), Ok(2));
        let mut reader = Reader::new(Bytes::from_static(&[0, 0, 0, 2, 0, 0]));
        assert_eq!(reader.array_len(false, 2), Err(CodecError::Truncated));
    }

    #[test]
    fn strings() {
        let mut buf = BytesMut::new();
        put_string(&mut buf, "abc", false);
        put_nullable_string(&mut buf, None, false);
        put_string(&mut buf, "de", true);
        put_nullable_string(&mut buf, None, true);
        let mut reader = Reader::new(buf.freeze());
        assert_eq!(reader.string(false).unwrap(), "abc");
        assert_eq!(reader.nullable_string(false).unwrap(), None);
        assert_eq!(reader.string(true).unwrap(), "de");
        assert_eq!(reader.nullable_string(true).unwrap(), None);
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn compact_strings_longer_than_i16_max_are_refused() {
        let mut buf = BytesMut::new();
        put_uvarint(&mut buf, STRING_LEN_MAX as u32 + 2);
        buf.put_bytes(b'a', STRING_LEN_MAX + 1);
        let mut reader = Reader::new(buf.freeze());
        assert!(matches!(reader.string(true), Err(CodecError::Malformed(_))));
    }
}
