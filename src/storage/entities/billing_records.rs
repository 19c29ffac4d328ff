//! The `billing_records` table: billing of one agent for one organization in one month.

use sea_orm::entity::prelude::*;

/// A row of `billing_records`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub agent_id: Uuid,
    pub month: String,
    pub agent_name: String,
    pub tokens: i64,
    pub cost_micros: i64,
    pub revenue_micros: i64,
    pub custom_rate: bool,
    /// The renewal invoice that billed this agent fee, once billed.
    pub invoice_id: Option<Uuid>,
    pub create_time: i64,
    pub update_time: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
