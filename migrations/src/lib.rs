//! Database migrations of tenantry, one file per step. Migrations use table and column
//! names, never the service's entities, so old steps keep compiling as models change.
//!
//! Conventions shared by every table: ids are UUID v7 (`uuid` on PostgreSQL, a 16-byte
//! blob on SQLite); instants are `BIGINT` microseconds since the Unix epoch (UTC), so
//! comparisons and ordering are exact and identical on both backends; money is `BIGINT`
//! micro-units (amount × 10⁶) of the row's currency; enumerations are short strings;
//! structured values are JSON text.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_organizations;
mod m20261123_000002_agents;
mod m20261123_000003_members;
mod m20261123_000004_audit_and_idempotency;
mod m20261123_000005_root_organization;
mod m20261123_000006_billing;
mod m20261123_000007_subscriptions;
mod m20261123_000008_events_and_transfers;
mod m20261123_000009_drop_latest_invoice_id;
mod m20261123_000010_organizations_name_order;

/// The ordered list of migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_organizations::Migration),
            Box::new(m20261123_000002_agents::Migration),
            Box::new(m20261123_000003_members::Migration),
            Box::new(m20261123_000004_audit_and_idempotency::Migration),
            Box::new(m20261123_000005_root_organization::Migration),
            Box::new(m20261123_000006_billing::Migration),
            Box::new(m20261123_000007_subscriptions::Migration),
            Box::new(m20261123_000008_events_and_transfers::Migration),
            Box::new(m20261123_000009_drop_latest_invoice_id::Migration),
            Box::new(m20261123_000010_organizations_name_order::Migration),
        ]
    }
}
