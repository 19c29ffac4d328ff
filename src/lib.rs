//! tenantry: the system of record for organizations (tenants) on multi-tenant AI-agent
//! platforms — their agents, members, API keys, plans, money and transfers — served
//! over gRPC.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod payments;
pub mod proto;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
