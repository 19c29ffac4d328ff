//! The `payment_intents` table: a payment intent of the `manual` gateway.

use sea_orm::entity::prelude::*;

/// A row of `payment_intents`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payment_intents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: Uuid,
    pub amount_micros: i64,
    pub currency: String,
    pub status: String,
    pub client_secret: String,
    pub idempotency_key: String,
    pub metadata: String,
    pub create_time: i64,
    pub update_time: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
