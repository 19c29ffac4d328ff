//! The `invoice_lines` table: one line of an invoice.

use sea_orm::entity::prelude::*;

/// A row of `invoice_lines`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invoice_lines")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub invoice_id: Uuid,
    pub position: i32,
    pub description: String,
    pub kind: String,
    pub quantity: i64,
    pub unit_amount_micros: i64,
    pub amount_micros: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub plan_id: String,
    pub agent_id: Option<Uuid>,
    pub service_id: String,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
