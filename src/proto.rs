//! Code generated from `proto/tenantry/v1` by `build.rs`.
#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

/// The `tenantry.v1` package.
pub mod v1 {
    tonic::include_proto!("tenantry.v1");
}

/// Encoded `FileDescriptorSet` of every tenantry proto, for reflection and tests.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tenantry_descriptor");

pub use v1::*;
