//! The `outbox_events` table: domain events written in the same transaction as their change, numbered (`position`) by the sequencer.

use sea_orm::entity::prelude::*;

/// A row of `outbox_events`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Set by the sequencer; `None` until then.
    pub position: Option<i64>,
    pub organization_id: Uuid,
    /// The organization's agency when the event happened (agencies follow their tenants).
    pub agency_id: Option<Uuid>,
    pub event_type: String,
    /// JSON object: the event's data.
    pub payload: String,
    pub request_id: String,
    pub create_time: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
