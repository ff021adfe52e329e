//! The Kafka wire protocol for Sluice: frames, request and response codecs, a client, and the
//! sender that moves bytes and file regions to sockets. It knows nothing of storage.

pub mod client;
pub mod codec;
pub mod fetch;
pub mod frame;
mod guard;
pub mod header;
pub mod produce;
pub mod send;
mod wire;

pub use codec::{
    decode_request, encode_api_versions_unsupported, encode_produce_response, encode_response,
    Request, SUPPORTED_APIS,
};
pub use fetch::{encode_fetch_response, Chunk, Region};
pub use header::RequestHeader;
pub use send::{SpliceSource, ZeroCopySender};

/// Everything that can be wrong with bytes a peer sent. The caller answers each of these by
/// closing the connection, as Kafka does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input ends before the message does")]
    Truncated,
    #[error("unknown api key {key} (version {version})")]
    UnknownApi { key: i16, version: i16 },
    #[error("api key {key} version {version} is not supported")]
    UnsupportedVersion { key: i16, version: i16 },
    /// An ApiVersions request newer than we speak. KIP-511 asks us to answer it with error 35
    /// and the versions we do support: pass the header to `encode_api_versions_unsupported`.
    #[error("ApiVersions version {} is newer than supported", .0.api_version)]
    ApiVersionsUnsupported(RequestHeader),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("api key {api_key} version {version}: body does not parse")]
    Body { api_key: i16, version: i16 },
    #[error("frame length {len} outside 0..={max}")]
    FrameLength { len: i64, max: usize },
    #[error("api key {api_key} version {version}: response does not encode")]
    Encode { api_key: i16, version: i16 },
}
