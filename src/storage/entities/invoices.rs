//! The `invoices` table: an invoice.

use sea_orm::entity::prelude::*;

/// A row of `invoices`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invoices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub seq: i64,
    pub number: String,
    pub subscription_id: Option<Uuid>,
    pub period_start: i64,
    pub period_end: i64,
    pub subtotal_micros: i64,
    pub total_micros: i64,
    pub amount_paid_micros: i64,
    pub currency: String,
    pub status: String,
    pub issue_time: Option<i64>,
    pub due_time: Option<i64>,
    pub paid_time: Option<i64>,
    pub void_time: Option<i64>,
    pub memo: String,
    pub status_reason: String,
    pub payment_transaction_id: Option<Uuid>,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
