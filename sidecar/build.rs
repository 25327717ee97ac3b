//! Embeds the eBPF object that `cargo xtask build-ebpf` built, and refuses a stale one.
use std::{
    env, fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

fn main() {
    compile_protos();
    embed_ebpf_object();
}

/// Generates the gRPC code from proto/ with protox (no protoc needed) and writes the file
/// descriptor set that server reflection publishes.
fn compile_protos() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let proto_root = manifest.parent().expect("workspace").join("proto");
    let files = [proto_root.join("sidecar/v1/sidecar.proto")];
    println!("cargo::rerun-if-changed={}", proto_root.display());
    let descriptors = match protox::compile(&files, [&proto_root]) {
        Ok(descriptors) => descriptors,
        Err(err) => fail(&format!("compiling the protos: {err}")),
    };
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let encoded = prost::Message::encode_to_vec(&descriptors);
    if let Err(err) = fs::write(out_dir.join("sidecar_descriptor.bin"), encoded) {
        fail(&format!("writing the descriptor set: {err}"));
    }
    if let Err(err) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)
    {
        fail(&format!("generating the gRPC code: {err}"));
    }
    compile_banyandb_protos(&proto_root);
}

/// The BanyanDB subset (proto/banyandb): client code for the exporter, server code for the
/// test stand-in. Kept out of the descriptor set that our server reflection publishes.
fn compile_banyandb_protos(proto_root: &Path) {
    let files = [
        "banyandb/common/v1/common.proto",
        "banyandb/common/v1/rpc.proto",
        "banyandb/model/v1/common.proto",
        "banyandb/model/v1/write.proto",
        "banyandb/database/v1/schema.proto",
        "banyandb/database/v1/rpc.proto",
        "banyandb/measure/v1/write.proto",
        "banyandb/measure/v1/rpc.proto",
    ]
    .map(|file| proto_root.join(file));
    let descriptors = match protox::compile(&files, [proto_root]) {
        Ok(descriptors) => descriptors,
        Err(err) => fail(&format!("compiling the BanyanDB protos: {err}")),
    };
    if let Err(err) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)
    {
        fail(&format!("generating the BanyanDB gRPC code: {err}"));
    }
}

fn embed_ebpf_object() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned();
    println!("cargo::rerun-if-env-changed=SIDECAR_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = env::var_os("SIDECAR_EBPF_OBJECT").map_or_else(
        || {
            env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from)
                .join("ebpf/bpfel-unknown-none/release/sidecar-ebpf")
        },
        PathBuf::from,
    );
    println!("cargo::rerun-if-changed={}", object.display());
    let sources = [root.join("sidecar-ebpf"), root.join("sidecar-common")];
    for dir in &sources {
        println!("cargo::rerun-if-changed={}", dir.display());
    }

    let Ok(built) = fs::metadata(&object).and_then(|m| m.modified()) else {
        fail(&format!(
            "the eBPF object {} does not exist: run `cargo xtask build-ebpf` (or `make build`)",
            object.display()
        ));
    };
    if let Some((newer, _)) = sources
        .iter()
        .filter_map(|dir| newest(dir))
        .max_by_key(|(_, time)| *time)
        .filter(|(_, time)| *time > built)
    {
        fail(&format!(
            "the eBPF object {} is older than {}: run `cargo xtask build-ebpf` (or `make build`)",
            object.display(),
            newer.display()
        ));
    }
    println!("cargo::rustc-env=SIDECAR_EBPF_OBJECT={}", object.display());
}

fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1);
}

/// The most recently modified source file under `dir` (skipping build output).
fn newest(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut best: Option<(PathBuf, SystemTime)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let candidate = if meta.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            newest(&path)
        } else {
            meta.modified().ok().map(|time| (path, time))
        };
        if let Some((path, time)) = candidate
            && best.as_ref().is_none_or(|(_, t)| time > *t)
        {
            best = Some((path, time));
        }
    }
    best
}
