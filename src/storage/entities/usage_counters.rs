//! The `usage_counters` table: month-to-date usage of one organization: the row usage recorders lock.

use sea_orm::entity::prelude::*;

/// A row of `usage_counters`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_counters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub month: String,
    pub cost_micros: i64,
    pub tokens: i64,
    pub messages: i64,
    pub conversations: i64,
    pub minutes: i64,
    pub logs: i64,
    pub events: i64,
    pub update_time: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
