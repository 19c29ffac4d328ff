//! The `spend_alerts` table: a spend threshold crossed in a month (at most one per threshold).

use sea_orm::entity::prelude::*;

/// A row of `spend_alerts`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "spend_alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub month: String,
    pub threshold: i32,
    pub month_to_date_micros: i64,
    pub limit_micros: i64,
    pub trigger_time: i64,
}

/// No relations are declared; joins are written explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
