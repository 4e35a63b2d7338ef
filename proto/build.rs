//! Generates the tonic/prost code with the protoc shipped by `protoc-bin-vendored`, so building
//! Netting never needs a system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/netting/catalog/v1/catalog.proto",
        "proto/netting/raft/v1/raft.proto",
        "proto/netting/discovery/v1/discovery.proto",
    ];
    let include = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let includes = [std::path::PathBuf::from("proto"), include];
    tonic_prost_build::configure().compile_with_config(
        config,
        &protos.map(Into::into),
        &includes,
    )?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
