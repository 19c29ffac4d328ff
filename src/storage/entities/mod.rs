//! SeaORM entities, one module per table.

pub mod addresses;
pub mod agent_assignments;
pub mod agents;
pub mod api_keys;
pub mod audit_entries;
pub mod billing_accounts;
pub mod billing_records;
pub mod credit_transactions;
pub mod idempotency_records;
pub mod invitations;
pub mod invoice_lines;
pub mod invoices;
pub mod members;
pub mod organizations;
pub mod payment_intents;
pub mod pre_approved_signups;
pub mod service_agreements;
pub mod service_purchases;
pub mod spend_alerts;
pub mod stripe_events;
pub mod subscription_periods;
pub mod subscriptions;
pub mod usage_counters;
pub mod usage_events;
