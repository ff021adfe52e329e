//! Frames: every Kafka request and response is a 4-byte big-endian length, then that many
//! bytes. This module checks the length against a limit before anyone allocates for it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::CodecError;

/// The bytes of the length prefix.
pub const FRAME_PREFIX_LEN: usize = 4;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const REQUEST_SIZE_MAX_DEFAULT: usize = 100 * 1024 * 1024;

const _: () = assert!(REQUEST_SIZE_MAX_DEFAULT <= i32::MAX as usize);

/// Reads a frame length from its prefix. A negative length or one above `size_max` is an
/// error: the caller closes the connection without reading the body.
pub fn decode_frame_len(
    prefix: [u8; FRAME_PREFIX_LEN],
    size_max: usize,
) -> Result<usize, CodecError> {
    let len = i32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(len) if len <= size_max => Ok(len),
        _ => Err(CodecError::FrameLength {
            len: i64::from(len),
            max: size_max,
        }),
    }
}

/// If `buf` starts with a whole frame, splits it off and returns its body (no prefix).
/// `Ok(None)` means more bytes are needed.
pub fn split_frame(buf: &mut BytesMut, size_max: usize) -> Result<Option<Bytes>, CodecError> {
    let Some(prefix) = buf.get(..FRAME_PREFIX_LEN) else {
        return Ok(None);
    };
    let mut raw = [0u8; FRAME_PREFIX_LEN];
    raw.copy_from_slice(prefix);
    let len = decode_frame_len(raw, size_max)?;
    if buf.len() - FRAME_PREFIX_LEN < len {
        return Ok(None);
    }
    let mut frame = buf.split_to(FRAME_PREFIX_LEN + len);
    let _ = frame.split_to(FRAME_PREFIX_LEN);
    Ok(Some(frame.freeze()))
}

/// Reserves room for a length prefix at the start of an empty buffer; `finish_frame` fills it.
pub(crate) fn start_frame(buf: &mut BytesMut) {
    debug_assert!(buf.is_empty());
    buf.put_i32(0);
}

/// Writes the length of everything after the prefix into the prefix, plus `extra` bytes that
/// follow in other chunks (file regions).
pub(crate) fn finish_frame(buf: &mut BytesMut, extra: u64) {
    assert!(buf.len() >= FRAME_PREFIX_LEN);
    let len = (buf.len() - FRAME_PREFIX_LEN) as u64 + extra;
    let len = i32::try_from(len).expect("response frame above i32::MAX bytes");
    buf[..FRAME_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], size_max: usize, expected: Result<Option<&[u8]>, CodecError>) {
        let mut buf = BytesMut::from(input);
        let got = split_frame(&mut buf, size_max);
        assert_eq!(
            got.as_ref().map(|f| f.as_deref()),
            expected.as_ref().map(|f| *f)
        );
    }

    #[test]
    fn frames() {
        check(&[0, 0], 10, Ok(None));
        check(&[0, 0, 0, 3, 1, 2], 10, Ok(None));
        check(&[0, 0, 0, 2, 1, 2, 9], 10, Ok(Some(&[1, 2])));
        check(&[0, 0, 0, 0], 10, Ok(Some(&[])));
        check(
            &[0, 0, 0, 11],
            10,
            Err(CodecError::FrameLength { len: 11, max: 10 }),
        );
        check(
            &[0xff, 0xff, 0xff, 0xff],
            10,
            Err(CodecError::FrameLength { len: -1, max: 10 }),
        );
    }

    #[test]
    fn split_leaves_the_rest() {
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 7, 0, 0, 0, 1, 8][..]);
        assert_eq!(split_frame(&mut buf, 10).unwrap().unwrap(), &[7][..]);
        assert_eq!(split_frame(&mut buf, 10).unwrap().unwrap(), &[8][..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn finish_writes_the_length() {
        let mut buf = BytesMut::new();
        start_frame(&mut buf);
        buf.put_slice(&[1, 2, 3]);
        finish_frame(&mut buf, 10);
        assert_eq!(&buf[..4], &13i32.to_be_bytes());
    }
}
