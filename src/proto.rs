//! The protocol code generated from `proto/` (tonic + prost, by `build.rs`): one home for the
//! server, the load generator, the CLIs, the tests and the examples.

/// `inference.GRPCInferenceService` (Triton's, wire-compatible) and its model configuration
/// messages.
#[allow(clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// `ferroserve.admin.v1.TrafficAdmin`: traffic policy, promotion and rollouts.
#[allow(clippy::all, clippy::pedantic)]
pub mod admin {
    tonic::include_proto!("ferroserve.admin.v1");
}

/// The encoded descriptors of both files above, served by server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferroserve_descriptor");
