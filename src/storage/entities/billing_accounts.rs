//! The `billing_accounts` table: an organization's credit balance and invoice sequence: the row ledger writers lock.

use sea_orm::entity::prelude::*;

/// A row of `billing_accounts`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: Uuid,
    pub currency: String,
    pub balance_micros: i64,
    pub invoice_seq: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
