//! Transports: each translates its wire format to the core's types and calls `routing::Router`.

pub mod admin;
pub mod admin_grpc;
pub mod admin_token;
pub mod compression;
pub mod conn;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod load_params;
pub mod sent;
pub mod serve;
pub mod shm;
pub mod tls;

/// Protocol extensions both front ends support, as listed in server metadata.
pub fn server_extensions() -> Vec<&'static str> {
    vec![
        "binary_tensor_data",
        "classification",
        "model_configuration",
        "model_repository",
        "parameters",
        "statistics",
        "system_shared_memory",
    ]
}
