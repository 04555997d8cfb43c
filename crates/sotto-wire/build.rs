//! Compiles the protobuf services with protox (pure Rust), so building needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/sotto/psi/v1/psi.proto",
        "proto/sotto/agg/v1/agg.proto",
        "proto/sotto/tee/v1/registry.proto",
        "proto/sotto/kms/v1/kms.proto",
        "proto/sotto/ledger/v1/ledger.proto",
        "proto/sotto/share/v1/share.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
