//! The generated gRPC types of `proto/sidecar/v1/sidecar.proto`.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    reason = "generated code"
)]
pub mod pb {
    tonic::include_proto!("sidecar.v1");
}

/// The encoded file descriptor set of our protos: published by server reflection, and used
/// by `sidecar query --json` to print messages as canonical proto JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sidecar_descriptor.bin"));

/// The fully qualified service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "sidecar.v1.SidecarService";
