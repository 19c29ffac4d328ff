//! The `subscriptions` table.

use sea_orm::entity::prelude::*;

/// A row of `subscriptions`: at most one not CANCELED per organization.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub plan_id: String,
    pub interval: String,
    pub status: String,
    pub currency: String,
    pub price_micros: i64,
    /// The instant periods are counted from (the creation, or the last interval reset).
    pub anchor_time: i64,
    pub current_period_start: i64,
    pub current_period_end: i64,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub cancel_request_time: Option<i64>,
    pub end_time: Option<i64>,
    pub scheduled_plan_id: Option<String>,
    pub scheduled_interval: Option<String>,
    pub status_reason: String,
    pub request_id: String,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
