//! The `external_assets` table: assets owned by other services, registered so they can be listed and transferred.

use sea_orm::entity::prelude::*;

/// A row of `external_assets`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "external_assets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub external_type: String,
    pub external_id: String,
    pub display_name: String,
    /// JSON object of string attributes.
    pub attributes: String,
    pub registered_by: String,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
