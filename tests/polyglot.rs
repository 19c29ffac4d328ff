//! The checks that are not written in Rust, run by `cargo test` so that the README's one
//! test command covers them: the Python and TypeScript clients' end-to-end smoke test
//! (`clients/smoke`) and the Helm chart's offline validation (`.ci/validate-chart`).
//!
//! They need `python3` (with `venv`) and Node.js with `npm`, and fetch pinned packages
//! from PyPI and npm on the first run (cached under `clients/` and `target/`). Without
//! those tools they say clearly that they were skipped, except with `CI=true`, where
//! they fail instead.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `tool --version` runs.
fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// False (after saying why) when a tool is missing outside CI; panics in CI.
fn tools_present(check: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !available(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !in_ci(),
        "{check}: {} not installed; CI must run this check",
        missing.join(", ")
    );
    eprintln!(
        "SKIPPED {check}: {} not installed (CI=true makes this a failure)",
        missing.join(", ")
    );
    false
}

/// Runs a repository script and fails with its output when it fails.
fn run(script: &Path, args: &[&str], envs: &[(&str, &str)]) {
    let output = Command::new(script)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        script.display(),
        output.status
    );
    println!("{stdout}");
}

#[test]
fn python_and_typescript_clients_pass_their_smoke_tests() {
    if !tools_present("client smoke tests", &["python3", "node", "npm", "curl"]) {
        return;
    }
    run(&root().join("clients/smoke"), &[BIN], &[]);
}

#[test]
fn the_helm_chart_and_dockerfile_pass_offline_validation() {
    if !tools_present("chart validation", &["python3"]) {
        return;
    }
    // The chart's smoke step starts this binary with the rendered pod environment (and,
    // with TENANTRY_TEST_DATABASE_URL, runs the migration Job's command on PostgreSQL).
    run(
        &root().join(".ci/validate-chart"),
        &[],
        &[("TENANTRY_BIN", BIN)],
    );
}
