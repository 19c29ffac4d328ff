//! TenantTransferService use cases: ownership, asset transfers between organizations,
//! the external asset registry, and tenant transfers between agencies (SPEC §7).
//! Every transfer is atomic (one transaction), audited, and emits an event.

pub mod assets;
pub mod ownership;
pub mod registry;
pub mod tenants;
