//! An HTTP infer body of JSON (`data` flat or nested, every datatype) → the domain request.
#![no_main]

use ferroserve::api::fuzzing;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|body: &[u8]| {
    if let Ok(d) = fuzzing::http_decode(body, None) {
        // Each element takes at least two bytes of text and decodes to at most eight.
        common::check_request(d.request, body.len(), 4);
    }
});
