//! The `webhook_deliveries` table: one event to one endpoint: PENDING until DELIVERED, DEAD after the last attempt, or CANCELED with its endpoint.

use sea_orm::entity::prelude::*;

/// A row of `webhook_deliveries`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    pub organization_id: Uuid,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_time: i64,
    /// A dispatcher's claim: no other dispatcher takes the row before this instant.
    pub lease_until: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: String,
    pub create_time: i64,
    pub update_time: i64,
    pub deliver_time: Option<i64>,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
