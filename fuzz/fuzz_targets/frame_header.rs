//! The request frame and header decoders: a length prefix split off a stream buffer, then the
//! request header of every header version, on arbitrary bytes. None may panic, and a frame
//! that splits must be as long as its prefix says.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_net::frame::split_frame;
use sluice_net::header::{decode_request_header, peek_api};

/// socket.request.max.bytes, as the broker applies it by default.
const FRAME_MAX: usize = 100 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, FRAME_MAX) {
        let _ = peek_api(&frame);
        for header_version in 0..=2 {
            if let Ok((_, body)) = decode_request_header(frame.clone(), header_version) {
                assert!(body.len() <= frame.len());
            }
        }
    }
    let _ = decode_request_header(Bytes::copy_from_slice(data), 2);
});
