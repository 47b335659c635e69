// Generates the gRPC service and messages from proto/ into OUT_DIR with a vendored protoc, so a
// build needs no system protobuf and nothing generated is committed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    // The descriptors of our services, for server reflection (api::grpc::reflection).
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("ferroserve_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        // Tensor payloads as `Bytes`: decoded without a copy, sliced without one.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &["proto/inference.proto", "proto/ferroserve_admin.proto"],
            &["proto"],
        )?;
    Ok(())
}
