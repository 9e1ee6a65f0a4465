//! Compiles `ferrolive.proto` with protox (a pure-Rust protobuf compiler: no system
//! `protoc` needed) and generates the tonic client and server code from the descriptors.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=ferrolive.proto");
    let fds = protox::compile(["ferrolive.proto"], ["."]).expect("compile ferrolive.proto");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let descriptor_path = out.join("ferrolive_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))
        .expect("write descriptor set");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate tonic code");
}
