//! The `tenant_transfers` table: requests to move a tenant to another agency or to self-managed.

use sea_orm::entity::prelude::*;

/// A row of `tenant_transfers`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_transfers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_organization_id: Uuid,
    pub source_agency_id: Option<Uuid>,
    pub target_agency_id: Option<Uuid>,
    pub to_self_managed: bool,
    pub status: String,
    pub note: String,
    pub requested_by: String,
    pub requester_organization_id: Option<Uuid>,
    pub decided_by: String,
    pub decision_note: String,
    pub expire_time: i64,
    pub create_time: i64,
    pub decide_time: Option<i64>,
    pub update_time: i64,
    pub request_id: String,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
