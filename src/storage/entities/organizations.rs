//! The `organizations` table.

use sea_orm::entity::prelude::*;

/// A row of `organizations`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub kind: String,
    pub parent_id: Option<Uuid>,
    pub status: String,
    pub contact_name: String,
    pub contact_email: String,
    pub description: String,
    pub interests: String,
    pub billing_rate_micros: i64,
    pub currency: String,
    pub plan: String,
    pub owner_user_id: String,
    pub owner_email: String,
    pub owner_name: String,
    pub spend_limit_micros: Option<i64>,
    pub max_agents: i32,
    pub max_phone_numbers: i32,
    pub max_concurrent_calls: i32,
    pub alert_thresholds: String,
    pub alert_emails: String,
    pub alert_action: String,
    pub deactivation_reason: String,
    pub create_time: i64,
    pub update_time: i64,
    pub delete_time: Option<i64>,
    /// Feature flag overrides over the plan's defaults: JSON object flag → enabled.
    pub feature_overrides: String,
    /// When a cancelled account's data is to be deleted.
    pub data_deletion_time: Option<i64>,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
