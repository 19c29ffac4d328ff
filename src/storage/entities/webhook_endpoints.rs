//! The `webhook_endpoints` table: an organization's webhook endpoints and their signing secrets.

use sea_orm::entity::prelude::*;

/// A row of `webhook_endpoints`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub url: String,
    /// JSON array of event types; empty = all.
    pub event_types: String,
    pub description: String,
    /// Signing secret (`whsec_...`), needed in clear to sign; never returned after creation.
    pub secret: String,
    pub created_by: String,
    /// Whether the endpoint also receives the events of the organization's tenants (an
    /// agency's endpoint created by its AGENCY_ADMIN or an operator, as WatchEvents and
    /// the audit log decide who sees tenants).
    pub include_tenants: bool,
    pub create_time: i64,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
