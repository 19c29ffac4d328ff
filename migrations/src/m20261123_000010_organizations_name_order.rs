//! An index for ListOrganizations' default order, `lower(name), id`: a page is then a
//! range of the index instead of a sort of every organization, and the page after a
//! token starts where the last one ended.
//!
//! The key is an expression, which sea-query writes for PostgreSQL but not for SQLite,
//! so the statement is written out; it is the same on both. SQLite uses an expression
//! index only for a query that writes the expression the same way (`lower(name)`).

use sea_orm_migration::prelude::*;

use crate::m20261123_000001_organizations::Organizations;

/// The index's name.
const NAME_ORDER: &str = "ix_organizations_name_order";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE INDEX {NAME_ORDER} ON organizations (lower(name), id)"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(NAME_ORDER)
                    .table(Organizations::Table)
                    .to_owned(),
            )
            .await
    }
}
