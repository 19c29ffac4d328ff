//! The `subscription_periods` table: one row per closed renewal period.

use sea_orm::entity::prelude::*;

/// A closed period of a subscription; the primary key is the guard that no period is
/// closed (and invoiced) twice.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscription_periods")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subscription_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub period_end: i64,
    pub organization_id: Uuid,
    pub invoice_id: Option<Uuid>,
    pub create_time: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
