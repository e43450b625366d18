//! Compiles Gatehouse's own .proto contracts in pure Rust (protox), so no
//! system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "gatehouse/auth/v1/auth.proto",
        "gatehouse/ratelimit/v1/ratelimit.proto",
        "gatehouse/broker/v1/broker.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
