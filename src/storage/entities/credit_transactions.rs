//! The `credit_transactions` table: one entry of the credits ledger.

use sea_orm::entity::prelude::*;

/// A row of `credit_transactions`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub kind: String,
    pub status: String,
    pub amount_micros: i64,
    pub balance_after_micros: Option<i64>,
    pub currency: String,
    pub reason: String,
    pub request_id: String,
    pub author: String,
    pub gateway: String,
    pub payment_intent_id: Option<String>,
    pub invoice_id: Option<Uuid>,
    pub counterparty_organization_id: Option<Uuid>,
    pub related_transaction_id: Option<Uuid>,
    pub failure_reason: String,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
