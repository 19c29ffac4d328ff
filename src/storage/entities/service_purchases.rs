//! The `service_purchases` table: add-on services bought by organizations.

use sea_orm::entity::prelude::*;

/// A row of `service_purchases`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_purchases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub service_id: String,
    pub service_name: String,
    pub quantity: i64,
    pub unit_amount_micros: i64,
    pub amount_micros: i64,
    pub currency: String,
    pub charge_type: String,
    pub payment_source: String,
    pub status: String,
    pub transaction_id: Option<Uuid>,
    pub gateway: String,
    pub payment_intent_id: Option<String>,
    pub agreement_id: Option<Uuid>,
    pub request_id: String,
    pub purchased_by: String,
    pub failure_reason: String,
    pub activate_time: Option<i64>,
    pub cancel_time: Option<i64>,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
