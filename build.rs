//! Generates the gRPC code from `proto/` with protox (no system `protoc`) and exports
//! the file descriptor set that server reflection and the policy-matrix test use.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/tenantry/v1/common.proto",
    "proto/tenantry/v1/organization.proto",
    "proto/tenantry/v1/billing.proto",
    "proto/tenantry/v1/subscription.proto",
    "proto/tenantry/v1/transfer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("tenantry_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // Maps as BTreeMap: encoded in key order, so a request's bytes (hashed for
    // idempotency keys) are the same on every retry.
    tonic_prost_build::configure()
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
