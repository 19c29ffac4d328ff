//! Agents and their assignment history.

use sea_orm_migration::prelude::*;

use crate::m20261123_000001_organizations::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(ColumnDef::new(Agents::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Agents::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(Agents::Name).string_len(100).not_null())
                    .col(ColumnDef::new(Agents::Status).string_len(16).not_null())
                    // Set when the agent was suspended by its organization's deactivation,
                    // so reactivation restores exactly those agents.
                    .col(ColumnDef::new(Agents::SuspendedByOrg).boolean().not_null())
                    .col(
                        ColumnDef::new(Agents::BillingRateMicros)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Agents::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Agents::UpdateTime).big_integer().not_null())
                    .col(ColumnDef::new(Agents::Version).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Agents::Table, Agents::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_agents_org")
                    .table(Agents::Table)
                    .col(Agents::OrganizationId)
                    .col(Agents::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AgentAssignments::Table)
                    .col(
                        ColumnDef::new(AgentAssignments::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AgentAssignments::AgentId).uuid().not_null())
                    .col(
                        ColumnDef::new(AgentAssignments::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AgentAssignments::AssignTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AgentAssignments::UnassignTime)
                            .big_integer()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(AgentAssignments::Table, AgentAssignments::AgentId)
                            .to(Agents::Table, Agents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_agent_assignments_agent")
                    .table(AgentAssignments::Table)
                    .col(AgentAssignments::AgentId)
                    .col(AgentAssignments::AssignTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AgentAssignments::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Agents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    OrganizationId,
    Name,
    Status,
    SuspendedByOrg,
    BillingRateMicros,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden)]
enum AgentAssignments {
    Table,
    Id,
    AgentId,
    OrganizationId,
    AssignTime,
    UnassignTime,
}
