//! The `agents` table.

use sea_orm::entity::prelude::*;

/// A row of `agents`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub status: String,
    pub suspended_by_org: bool,
    pub billing_rate_micros: Option<i64>,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
