//! The binary tensor extension: the first line is the `Inference-Header-Content-Length` value
//! as sent, the rest the body (a JSON header, then raw tensors and BYTES length prefixes).
#![no_main]

use ferroserve::api::fuzzing;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|input: &[u8]| {
    let (header, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&b""[..], input),
    };
    // As the handler reads the header: trimmed text, a byte count, else refused.
    let Some(header_len) = std::str::from_utf8(header)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    else {
        return;
    };
    if let Ok(d) = fuzzing::http_decode(body, Some(header_len)) {
        common::check_request(d.request, body.len(), 4);
    }
});
