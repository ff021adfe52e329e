//! Every request decoder behind `decode_request`. The first two bytes pick an api the codecs
//! serve and one of its versions, so that the fuzzer spends its time inside the bodies; the
//! rest is the header from the correlation id on, and the body. No input may panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_net::codec::{decode_request, SUPPORTED_APIS};

fuzz_target!(|data: &[u8]| {
    let [pick, version, rest @ ..] = data else {
        return;
    };
    let (key, min, max) = SUPPORTED_APIS[usize::from(*pick) % SUPPORTED_APIS.len()];
    let span = (max - min + 1) as u8;
    let version = min + i16::from(*version % span);
    let mut frame = Vec::with_capacity(4 + rest.len());
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(rest);
    let _ = decode_request(Bytes::from(frame));
});
