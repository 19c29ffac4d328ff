//! The `pre_approved_signups` table.

use sea_orm::entity::prelude::*;

/// A row of `pre_approved_signups`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pre_approved_signups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: Option<String>,
    pub code: Option<String>,
    pub max_uses: i32,
    pub use_count: i32,
    pub expire_time: Option<i64>,
    pub create_time: i64,
    pub delete_time: Option<i64>,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
