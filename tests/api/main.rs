//! Integration tests: a real server on 127.0.0.1:0 per test, the generated client, and
//! the same suite on SQLite (always) and PostgreSQL (when `TENANTRY_TEST_DATABASE_URL`
//! is set; CI always sets it).

mod accounts;
mod addons;
mod agents;
mod agreements;
mod analytics;
mod asset_transfers;
mod audit;
mod bad_input;
mod billing_records;
mod crash;
mod credits;
mod emails;
mod events;
mod external_assets;
mod fake_stripe;
mod feature_flags;
mod helpers;
mod hostile;
mod idempotency;
mod invoices;
mod limits;
mod members;
mod metrics;
mod migrations;
mod organizations;
mod ownership;
mod payments;
mod plan_changes;
mod plan_limits;
mod plans;
mod policy_matrix;
#[path = "../support/process.rs"]
mod process;
mod profile;
mod quotas;
mod rate_limit;
mod renewals;
mod replicas;
mod serving;
mod signups;
mod sinks;
mod spend_limits;
mod subscriptions;
mod tenant_transfers;
mod tokens;
mod usage;
mod usage_grouping;
mod webhooks;
