//! Compiles the .proto files with a vendored protoc, so no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Payloads as `Bytes` let the broker pass them along without copying.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "proto/hermod/v1/broker.proto",
            "proto/hermod/v1/cluster.proto",
            "proto/hermod/internal/v1/peer.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
