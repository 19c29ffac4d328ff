//! The `members` table.

use sea_orm::entity::prelude::*;

/// A row of `members`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub is_owner: bool,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
