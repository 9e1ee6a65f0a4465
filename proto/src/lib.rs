//! The gRPC schema of the ferrolive control API (`ferrolive.proto`), compiled at build time
//! with protox + tonic-prost-build.

/// `package ferrolive.v1`: the `Control` service and its messages.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/ferrolive.v1.rs"));
}

/// The encoded `FileDescriptorSet` of `ferrolive.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferrolive_descriptor.bin"));
