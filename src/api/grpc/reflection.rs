//! gRPC server reflection, v1 and v1alpha (tonic-reflection), over the descriptors build.rs
//! writes for our protos and tonic-health's: grpcurl and other reflection clients list and call
//! every service with no proto files (Triton has no reflection).

use tonic_reflection::server::{v1, v1alpha, Builder, Error};

/// Every service the gRPC port serves, both reflection versions included (each builder would
/// otherwise list only its own).
fn builder() -> Builder<'static> {
    Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Both reflection services (the same descriptors; clients pick the version they speak).
pub fn services() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    Error,
> {
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
