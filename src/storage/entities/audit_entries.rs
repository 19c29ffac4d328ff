//! The `audit_entries` table.

use sea_orm::entity::prelude::*;

/// A row of `audit_entries`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_organization_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub request_id: String,
    pub summary: String,
    pub create_time: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
