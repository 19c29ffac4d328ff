//! The `service_agreements` table: organizations' acceptances of service terms.

use sea_orm::entity::prelude::*;

/// A row of `service_agreements`. `terms_version` is the accepted terms version;
/// `version` is the row's concurrency version (the etag).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_agreements")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub service_id: String,
    pub terms_version: String,
    pub status: String,
    /// JSON object of string → string.
    pub metadata: String,
    pub accepted_by: String,
    pub accept_time: i64,
    pub revoked_by: String,
    pub revoke_time: Option<i64>,
    pub revoke_reason: String,
    pub request_id: String,
    pub update_time: i64,
    pub version: i64,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
