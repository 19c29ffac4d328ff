//! The `usage_events` table: one recorded usage event.

use sea_orm::entity::prelude::*;

/// A row of `usage_events`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_id: String,
    pub agent_id: Uuid,
    pub metric: String,
    pub quantity: i64,
    pub cost_micros: i64,
    pub occurred_at: i64,
    pub month: String,
    pub channel: String,
    pub dimensions: String,
    pub recorded_by: String,
    pub create_time: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
