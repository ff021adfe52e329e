//! Request headers (v0, v1, and the flexible v2 with tagged fields) and response headers
//! (v0, and the flexible v1). Which version a message uses depends on its api key and
//! version; kafka-protocol's schema tables say which.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::wire::{self, Reader};
use crate::CodecError;

/// The fields of a request header that the broker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// Bytes of api key, api version and correlation id: the part every header version shares.
pub const REQUEST_HEADER_FIXED_LEN: usize = 8;

const _: () = assert!(REQUEST_HEADER_FIXED_LEN == 2 + 2 + 4);

/// The request header version for an api key and version, or `None` for an unknown key.
pub fn request_header_version(api_key: i16, api_version: i16) -> Option<i16> {
    let key = ApiKey::try_from(api_key).ok()?;
    Some(key.request_header_version(api_version))
}

/// The response header version. ApiVersions answers always use v0, whatever the request
/// version, so that a client can read the answer before it knows what we speak.
pub fn response_header_version(api_key: i16, api_version: i16) -> i16 {
    match ApiKey::try_from(api_key) {
        Ok(ApiKey::ApiVersions) | Err(()) => 0,
        Ok(key) => key.response_header_version(api_version),
    }
}

/// Peeks the api key and version at the start of a request frame.
pub fn peek_api(frame: &[u8]) -> Result<(i16, i16), CodecError> {
    match frame {
        [k0, k1, v0, v1, ..] => Ok((
            i16::from_be_bytes([*k0, *k1]),
            i16::from_be_bytes([*v0, *v1]),
        )),
        _ => Err(CodecError::Truncated),
    }
}

/// Decodes a request header of the given header version from the front of `frame`, and
/// returns it with the body that follows (a slice of the same frame).
pub fn decode_request_header(
    frame: Bytes,
    header_version: i16,
) -> Result<(RequestHeader, Bytes), CodecError> {
    let mut reader = Reader::new(frame);
    let header = RequestHeader {
        api_key: reader.i16()?,
        api_version: reader.i16()?,
        correlation_id: reader.i32()?,
        // The client id is a classic nullable string even in the flexible header v2.
        client_id: if header_version >= 1 {
            reader.nullable_string(false)?
        } else {
            None
        },
    };
    if header_version >= 2 {
        reader.skip_tagged_fields()?;
    }
    Ok((header, reader.rest()))
}

/// Writes a request header (for the client side).
pub fn encode_request_header(buf: &mut BytesMut, header: &RequestHeader, header_version: i16) {
    buf.put_i16(header.api_key);
    buf.put_i16(header.api_version);
    buf.put_i32(header.correlation_id);
    if header_version >= 1 {
        wire::put_nullable_string(buf, header.client_id.as_deref(), false);
    }
    if header_version >= 2 {
        wire::put_empty_tags(buf);
    }
}

/// Writes the response header for a request: the correlation id, then an empty tagged-field
/// section for flexible versions.
pub fn encode_response_header(buf: &mut BytesMut, header: &RequestHeader) {
    buf.put_i32(header.correlation_id);
    if response_header_version(header.api_key, header.api_version) >= 1 {
        wire::put_empty_tags(buf);
    }
}

/// The length `encode_response_header` writes.
pub fn response_header_len(header: &RequestHeader) -> usize {
    if response_header_version(header.api_key, header.api_version) >= 1 {
        5
    } else {
        4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        input: &[u8],
        header_version: i16,
        expected: Result<(RequestHeader, &[u8]), CodecError>,
    ) {
        let got = decode_request_header(Bytes::copy_from_slice(input), header_version);
        let got = got.map(|(h, body)| (h, body.to_vec()));
        assert_eq!(got, expected.map(|(h, body)| (h, body.to_vec())));
    }

    fn header(client_id: Option<&str>) -> RequestHeader {
        RequestHeader {
            api_key: 18,
            api_version: 3,
            correlation_id: 7,
            client_id: client_id.map(str::to_owned),
        }
    }

    #[test]
    fn header_versions() {
        let fixed = [0, 18, 0, 3, 0, 0, 0, 7];
        check(&[&fixed[..], &[9]].concat(), 0, Ok((header(None), &[9])));
        check(
            &[&fixed[..], &[0, 2, b'k', b'c', 9]].concat(),
            1,
            Ok((header(Some("kc")), &[9])),
        );
        check(
            &[&fixed[..], &[0xff, 0xff, 9]].concat(),
            1,
            Ok((header(None), &[9])),
        );
        check(
            &[&fixed[..], &[0, 1, b'x', 0, 9]].concat(),
            2,
            Ok((header(Some("x")), &[9])),
        );
        // A tagged field in the header is skipped.
        check(
            &[&fixed[..], &[0, 1, b'x', 1, 5, 2, 0xaa, 0xbb, 9]].concat(),
            2,
            Ok((header(Some("x")), &[9])),
        );
        check(&fixed[..6], 1, Err(CodecError::Truncated));
        check(
            &[&fixed[..], &[0, 5, b'x']].concat(),
            1,
            Err(CodecError::Truncated),
        );
        check(
            &[&fixed[..], &[0, 1, b'x']].concat(),
            2,
            Err(CodecError::Truncated),
        );
    }

    #[test]
    fn encode_then_decode() {
        for version in 0..=2 {
            let mut buf = BytesMut::new();
            let expected = header(if version == 0 { None } else { Some("client") });
            encode_request_header(&mut buf, &expected, version);
            check(&buf, version, Ok((expected, &[])));
        }
    }

    #[test]
    fn api_versions_responses_use_header_v0() {
        assert_eq!(response_header_version(18, 3), 0);
        assert_eq!(response_header_version(18, 4), 0);
        assert_eq!(response_header_version(3, 9), 1);
        assert_eq!(response_header_version(3, 8), 0);
        assert_eq!(request_header_version(18, 3), Some(2));
        assert_eq!(request_header_version(1, 12), Some(2));
        assert_eq!(request_header_version(1, 11), Some(1));
        assert_eq!(request_header_version(1000, 0), None);
    }
}
