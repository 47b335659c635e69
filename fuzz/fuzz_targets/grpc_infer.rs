//! A gRPC `ModelInferRequest`: the first line is the `grpc-timeout` value (empty: none), the rest
//! the message → the pre-scan → prost → the domain request, at the server's default limit.
#![no_main]

use ferroserve::api::fuzzing;
use libfuzzer_sys::fuzz_target;

mod common;

/// `max_request_bytes`' default (64 MiB).
const MAX_REQUEST_BYTES: usize = 64 << 20;

fuzz_target!(|input: &[u8]| {
    let (timeout, msg) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (std::str::from_utf8(&input[..at]).ok(), &input[at + 1..]),
        None => (None, input),
    };
    let timeout = timeout.filter(|t| !t.is_empty());
    if let Ok(req) = fuzzing::grpc_decode(msg, timeout, MAX_REQUEST_BYTES) {
        // A one-byte varint widens to an eight-byte INT64/UINT64 element at most.
        common::check_request(req, msg.len(), 8);
    }
});
