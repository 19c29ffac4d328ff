//! The audit log and the idempotency records of `request_id`s.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEntries::Table)
                    .col(ColumnDef::new(AuditEntries::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AuditEntries::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(AuditEntries::ActorKind).string_len(16).not_null())
                    .col(ColumnDef::new(AuditEntries::ActorId).string_len(255).not_null())
                    .col(ColumnDef::new(AuditEntries::ActorOrganizationId).uuid().null())
                    .col(ColumnDef::new(AuditEntries::Action).string_len(64).not_null())
                    .col(ColumnDef::new(AuditEntries::TargetType).string_len(32).not_null())
                    .col(ColumnDef::new(AuditEntries::TargetId).string_len(64).not_null())
                    .col(ColumnDef::new(AuditEntries::RequestId).string_len(128).not_null())
                    .col(ColumnDef::new(AuditEntries::Summary).text().not_null())
                    .col(ColumnDef::new(AuditEntries::CreateTime).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_entries_org")
                    .table(AuditEntries::Table)
                    .col(AuditEntries::OrganizationId)
                    .col(AuditEntries::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyRecords::Table)
                    .col(
                        ColumnDef::new(IdempotencyRecords::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyRecords::Scope)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyRecords::RequestId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyRecords::Method)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyRecords::RequestHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyRecords::Response)
                            .binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyRecords::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_idempotency_scope_request")
                    .table(IdempotencyRecords::Table)
                    .col(IdempotencyRecords::Scope)
                    .col(IdempotencyRecords::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_create_time")
                    .table(IdempotencyRecords::Table)
                    .col(IdempotencyRecords::CreateTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyRecords::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditEntries::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEntries {
    Table,
    Id,
    OrganizationId,
    ActorKind,
    ActorId,
    ActorOrganizationId,
    Action,
    TargetType,
    TargetId,
    RequestId,
    Summary,
    CreateTime,
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    Id,
    Scope,
    RequestId,
    Method,
    RequestHash,
    Response,
    CreateTime,
}
