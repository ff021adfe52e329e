//! Requests in, responses out: `decode_request` turns a frame into a header and a request
//! (Produce and Fetch through the hand-written decoders, everything else through
//! kafka-protocol), and the `encode_*` functions turn answers into whole frames.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::fetch::{self, FetchRequest};
use crate::frame;
use crate::guard;
use crate::header::{self, RequestHeader};
use crate::produce::{self, ProduceRequest, ProduceResponse};
use crate::CodecError;

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    Other(RequestKind),
}

/// The ApiVersions versions we answer; newer ones get error 35 (KIP-511).
pub const API_VERSIONS_VERSION_MAX: i16 = 4;

/// UNSUPPORTED_VERSION.
const ERROR_UNSUPPORTED_VERSION: i16 = 35;

/// The versions the codecs handle: (api key, min, max). Mostly kafka-protocol's ranges, capped
/// where a later version names topics by id only, or changes semantics the broker does not
/// implement (ListOffsets v8+ special timestamps, Produce v10+ leader hints).
pub const SUPPORTED_APIS: &[(i16, i16, i16)] = &[
    (
        ApiKey::Produce as i16,
        produce::PRODUCE_VERSION_MIN,
        produce::PRODUCE_VERSION_MAX,
    ),
    (
        ApiKey::Fetch as i16,
        fetch::FETCH_VERSION_MIN,
        fetch::FETCH_VERSION_MAX,
    ),
    (ApiKey::ListOffsets as i16, 1, 7),
    (ApiKey::Metadata as i16, 0, 12),
    (ApiKey::OffsetCommit as i16, 2, 9),
    (ApiKey::OffsetFetch as i16, 1, 9),
    (ApiKey::FindCoordinator as i16, 0, 6),
    (ApiKey::JoinGroup as i16, 0, 9),
    (ApiKey::Heartbeat as i16, 0, 4),
    (ApiKey::LeaveGroup as i16, 0, 5),
    (ApiKey::SyncGroup as i16, 0, 5),
    (ApiKey::DescribeGroups as i16, 0, 5),
    (ApiKey::ListGroups as i16, 0, 5),
    (ApiKey::ApiVersions as i16, 0, API_VERSIONS_VERSION_MAX),
    (ApiKey::CreateTopics as i16, 2, 7),
    (ApiKey::DeleteTopics as i16, 1, 6),
    (ApiKey::DeleteRecords as i16, 0, 2),
    (ApiKey::InitProducerId as i16, 0, 5),
    (ApiKey::OffsetForLeaderEpoch as i16, 2, 4),
    (ApiKey::DescribeConfigs as i16, 1, 4),
    (ApiKey::AlterConfigs as i16, 0, 2),
    (ApiKey::DescribeLogDirs as i16, 1, 4),
    (ApiKey::CreatePartitions as i16, 0, 3),
    (ApiKey::DeleteGroups as i16, 0, 2),
    (ApiKey::ElectLeaders as i16, 0, 2),
    (ApiKey::IncrementalAlterConfigs as i16, 0, 1),
    (ApiKey::OffsetDelete as i16, 0, 0),
    (ApiKey::DescribeCluster as i16, 0, 1),
    (ApiKey::DescribeQuorum as i16, 0, 2),
];

/// Whether the codecs handle this api key and version.
pub fn is_supported(api_key: i16, api_version: i16) -> bool {
    SUPPORTED_APIS
        .iter()
        .any(|&(key, min, max)| key == api_key && (min..=max).contains(&api_version))
}

/// The ApiVersions entries for `SUPPORTED_APIS`, for the broker's ApiVersions answer.
pub fn supported_api_versions() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

/// Decodes a request frame (without its length prefix).
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, Request), CodecError> {
    let (key, version) = header::peek_api(&frame)?;
    let api = ApiKey::try_from(key).map_err(|()| CodecError::UnknownApi { key, version })?;
    if !is_supported(key, version) {
        if api == ApiKey::ApiVersions && version > API_VERSIONS_VERSION_MAX {
            return Err(CodecError::ApiVersionsUnsupported(decode_future_header(
                frame,
            )?));
        }
        return Err(CodecError::UnsupportedVersion { key, version });
    }
    let (header, body) = header::decode_request_header(frame, api.request_header_version(version))?;
    let request = match api {
        ApiKey::Produce => Request::Produce(produce::decode_produce_request(body, version)?),
        ApiKey::Fetch => Request::Fetch(fetch::decode_fetch_request(body, version)?),
        _ => {
            // kafka-protocol sizes its vectors from counts on the wire; the guard refuses
            // any count the body cannot hold before they are read.
            guard::check(key, version, &body).map_err(|_| CodecError::Body {
                api_key: key,
                version,
            })?;
            let mut body = body;
            let request =
                RequestKind::decode(api, &mut body, version).map_err(|_| CodecError::Body {
                    api_key: key,
                    version,
                })?;
            Request::Other(request)
        }
    };
    Ok((header, request))
}

/// The header of an ApiVersions request newer than we know. Its header is v2 as far as we
/// can tell; should a future version change that, the correlation id (at a fixed place) is
/// still enough to answer.
fn decode_future_header(frame: Bytes) -> Result<RequestHeader, CodecError> {
    match header::decode_request_header(frame.clone(), 2) {
        Ok((header, _)) => Ok(header),
        Err(_) => Ok(header::decode_request_header(frame, 0)?.0),
    }
}

/// Starts a response frame: the prefix placeholder and the response header.
fn start_response(header: &RequestHeader) -> BytesMut {
    let mut buf = BytesMut::with_capacity(256);
    frame::start_frame(&mut buf);
    header::encode_response_header(&mut buf, header);
    buf
}

/// Full frame (length prefix + response header + body) for a kafka-protocol response. An
/// error means the response holds a field the request's version cannot carry: a broker bug,
/// which the caller answers by closing the connection rather than crashing the process.
pub fn encode_response(
    header: &RequestHeader,
    response: ResponseKind,
) -> Result<Bytes, CodecError> {
    let mut buf = start_response(header);
    response
        .encode(&mut buf, header.api_version)
        .map_err(|_| CodecError::Encode {
            api_key: header.api_key,
            version: header.api_version,
        })?;
    frame::finish_frame(&mut buf, 0);
    Ok(buf.freeze())
}

/// Full frame for a Produce response, in the request's version.
pub fn encode_produce_response(header: &RequestHeader, response: &ProduceResponse) -> Bytes {
    debug_assert_eq!(header.api_key, ApiKey::Produce as i16);
    let mut buf = start_response(header);
    produce::encode_produce_response_body(&mut buf, response, header.api_version);
    frame::finish_frame(&mut buf, 0);
    buf.freeze()
}

/// ApiVersions for an unsupported version: error 35 and a v0 body listing `apis` as
/// (key, min, max) (KIP-511), so the client can retry with a version the server speaks. A v0
/// body has no tagged fields at all, which keeps old librdkafka happy.
pub fn encode_api_versions_unsupported(header: &RequestHeader, apis: &[(i16, i16, i16)]) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + apis.len() * 6);
    frame::start_frame(&mut buf);
    buf.put_i32(header.correlation_id);
    buf.put_i16(ERROR_UNSUPPORTED_VERSION);
    buf.put_i32(apis.len() as i32);
    for &(key, min, max) in apis {
        buf.put_i16(key);
        buf.put_i16(min);
        buf.put_i16(max);
    }
    frame::finish_frame(&mut buf, 0);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, RequestHeader as KpHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use proptest::prelude::*;

    fn encode_request(key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        KpHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(11)
            .with_client_id(Some(StrBytes::from_static_str("tester")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn check(frame: Bytes, expected: Result<(i16, i16, i32), CodecError>) {
        let got = decode_request(frame).map(|(h, _)| (h.api_key, h.api_version, h.correlation_id));
        assert_eq!(got, expected);
    }

    #[test]
    fn supported_ranges_are_within_kafka_protocol() {
        for &(key, min, max) in SUPPORTED_APIS {
            let api = ApiKey::try_from(key).unwrap();
            let valid = api.valid_versions();
            assert!(
                valid.min <= min && max <= valid.max && min <= max,
                "{api:?}"
            );
        }
    }

    #[test]
    fn decodes_other_apis_through_kafka_protocol() {
        for version in 0..=API_VERSIONS_VERSION_MAX {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("x"))
                .with_client_software_version(StrBytes::from_static_str("1"));
            let frame = encode_request(ApiKey::ApiVersions, version, &request);
            let (header, decoded) = decode_request(frame).unwrap();
            assert_eq!(header.client_id.as_deref(), Some("tester"));
            assert!(matches!(
                decoded,
                Request::Other(RequestKind::ApiVersions(_))
            ));
        }
        for version in 0..=12 {
            let frame = encode_request(ApiKey::Metadata, version, &MetadataRequest::default());
            check(frame, Ok((3, version, 11)));
        }
    }

    #[test]
    fn refuses_unknown_and_unsupported() {
        check(
            Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1]),
            Err(CodecError::UnknownApi {
                key: 0x7f00,
                version: 0,
            }),
        );
        check(
            Bytes::from_static(&[0, 1, 0, 13, 0, 0, 0, 1]),
            Err(CodecError::UnsupportedVersion {
                key: 1,
                version: 13,
            }),
        );
        check(Bytes::from_static(&[0]), Err(CodecError::Truncated));
        // A Metadata body that ends early.
        let mut frame =
            BytesMut::from(&encode_request(ApiKey::Metadata, 1, &MetadataRequest::default())[..]);
        frame.truncate(frame.len() - 2);
        check(
            frame.freeze(),
            Err(CodecError::Body {
                api_key: 3,
                version: 1,
            }),
        );
    }

    #[test]
    fn too_new_api_versions_gets_error_35_with_a_v0_body() {
        let frame = encode_request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut raw = BytesMut::from(&frame[..]);
        raw[3] = 9; // claim version 9
        let Err(CodecError::ApiVersionsUnsupported(header)) = decode_request(raw.freeze()) else {
            panic!("expected ApiVersionsUnsupported");
        };
        assert_eq!((header.api_version, header.correlation_id), (9, 11));
        let mut answer = encode_api_versions_unsupported(&header, SUPPORTED_APIS);
        let len = i32::from_be_bytes(answer[..4].try_into().unwrap());
        assert_eq!(len as usize, answer.len() - 4);
        let _ = answer.split_to(4);
        assert_eq!(i32::from_be_bytes(answer[..4].try_into().unwrap()), 11);
        let _ = answer.split_to(4);
        let body = ApiVersionsResponse::decode(&mut answer, 0).unwrap();
        assert!(answer.is_empty());
        assert_eq!(body.error_code, 35);
        assert_eq!(body.api_keys.len(), SUPPORTED_APIS.len());
    }

    #[test]
    fn api_versions_response_leaves_out_default_tagged_fields() {
        let response = ApiVersionsResponse::default().with_api_keys(supported_api_versions());
        for version in 3..=4 {
            let header = RequestHeader {
                api_key: 18,
                api_version: version,
                correlation_id: 5,
                client_id: None,
            };
            let frame =
                encode_response(&header, ResponseKind::ApiVersions(response.clone())).unwrap();
            // prefix, correlation id (header v0), error code, compact array, entries, throttle,
            // and a single zero byte for "no tagged fields".
            let expected_len = 4 + 4 + 2 + 1 + SUPPORTED_APIS.len() * 7 + 4 + 1;
            assert_eq!(frame.len(), expected_len);
            assert_eq!(frame[frame.len() - 1], 0);
        }
    }

    #[test]
    fn produce_responses_are_framed() {
        let header = RequestHeader {
            api_key: 0,
            api_version: 9,
            correlation_id: 3,
            client_id: None,
        };
        let frame = encode_produce_response(&header, &ProduceResponse::default());
        // prefix, correlation id, header tags, empty compact array, throttle, tags.
        assert_eq!(
            &frame[..],
            &[0, 0, 0, 11, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0, 0][..]
        );
    }

    proptest! {
        #[test]
        fn header_decoding_never_panics(input in proptest::collection::vec(any::<u8>(), 0..64), header_version in 0i16..3) {
            let _ = header::decode_request_header(Bytes::from(input), header_version);
        }

        #[test]
        fn produce_and_fetch_frames_never_panic(key in 0i16..2, version in 0i16..14,
                                                rest in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut frame = BytesMut::new();
            frame.put_i16(key);
            frame.put_i16(version);
            frame.put_slice(&rest);
            let _ = decode_request(frame.freeze());
        }
    }
}
