//! SeaORM entities, one module per table.

pub mod addresses;
pub mod agent_assignments;
pub mod agents;
pub mod api_keys;
pub mod audit_entries;
pub mod idempotency_records;
pub mod invitations;
pub mod members;
pub mod organizations;
pub mod pre_approved_signups;
