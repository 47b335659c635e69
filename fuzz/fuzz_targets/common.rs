//! Invariants the decoding targets share.

use ferroserve::api::fuzzing;
use ferroserve::routing::request::{MAX_INPUTS, MAX_OUTPUTS};
use ferroserve::routing::{InferRequest, InferResponse};
use ferroserve::tensor::Tensor;

/// A decoded request within the body that carried it: counts under the limits, every tensor
/// consistent with its shape, decoded bytes at most `factor` times the body, a deadline that
/// does not overflow, and its tensors answer back unchanged through both encoders.
pub fn check_request(req: InferRequest, body_len: usize, factor: usize) {
    assert!(
        req.inputs.len() <= MAX_INPUTS,
        "{} inputs",
        req.inputs.len()
    );
    assert!(
        req.outputs.len() <= MAX_OUTPUTS,
        "{} outputs",
        req.outputs.len()
    );
    let mut bytes = 0usize;
    for input in &req.inputs {
        let t = &input.tensor;
        Tensor::new(t.dtype(), t.shape().to_vec(), t.data().clone())
            .expect("a decoded tensor is consistent with its shape");
        bytes += t.data().len();
    }
    assert!(
        bytes <= factor * body_len + 8,
        "{bytes} tensor bytes from a {body_len}-byte body"
    );
    let _ = fuzzing::deadline_of(req.timeout);
    let resp = InferResponse {
        model: req.model,
        version: "1".into(),
        id: req.id,
        outputs: req.inputs,
    };
    if let Err(e) = fuzzing::http_round_trip(&resp) {
        panic!("HTTP round trip: {e}");
    }
    if let Err(e) = fuzzing::grpc_round_trip(resp) {
        panic!("gRPC round trip: {e}");
    }
}
