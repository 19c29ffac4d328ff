//! Integration tests: a real server on 127.0.0.1:0 per test, the generated client, and
//! the same suite on SQLite (always) and PostgreSQL (when `TENANTRY_TEST_DATABASE_URL`
//! is set; CI always sets it).

mod agents;
mod audit;
mod bad_input;
mod helpers;
mod idempotency;
mod members;
mod migrations;
mod organizations;
mod policy_matrix;
mod profile;
mod rate_limit;
mod serving;
mod signups;
mod tokens;
