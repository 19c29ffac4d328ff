//! The `email_messages` table: queued notification emails, sent over SMTP (or logged) by the dispatcher.

use sea_orm::entity::prelude::*;

/// A row of `email_messages`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_id: Option<Uuid>,
    pub kind: String,
    pub to_address: String,
    pub subject: String,
    /// Cleared once sent: an invitation's body holds its token.
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_time: i64,
    pub lease_until: Option<i64>,
    pub last_error: String,
    pub create_time: i64,
    pub update_time: i64,
    pub send_time: Option<i64>,
}

/// No relations are navigated through the ORM; queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
