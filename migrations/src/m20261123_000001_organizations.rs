//! Organizations, their API keys and address books.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(ColumnDef::new(Organizations::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Organizations::Name).string_len(100).not_null())
                    .col(ColumnDef::new(Organizations::Slug).string_len(63).not_null())
                    .col(ColumnDef::new(Organizations::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Organizations::ParentId).uuid().null())
                    .col(ColumnDef::new(Organizations::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Organizations::ContactName).string_len(200).not_null())
                    .col(ColumnDef::new(Organizations::ContactEmail).string_len(254).not_null())
                    .col(ColumnDef::new(Organizations::Description).text().not_null())
                    .col(ColumnDef::new(Organizations::Interests).text().not_null())
                    .col(
                        ColumnDef::new(Organizations::BillingRateMicros)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Organizations::Currency).string_len(3).not_null())
                    .col(ColumnDef::new(Organizations::Plan).string_len(63).not_null())
                    .col(ColumnDef::new(Organizations::OwnerUserId).string_len(255).not_null())
                    .col(ColumnDef::new(Organizations::OwnerEmail).string_len(254).not_null())
                    .col(ColumnDef::new(Organizations::OwnerName).string_len(200).not_null())
                    .col(
                        ColumnDef::new(Organizations::SpendLimitMicros)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Organizations::MaxAgents).integer().not_null())
                    .col(ColumnDef::new(Organizations::MaxPhoneNumbers).integer().not_null())
                    .col(
                        ColumnDef::new(Organizations::MaxConcurrentCalls)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Organizations::AlertThresholds).text().not_null())
                    .col(ColumnDef::new(Organizations::AlertEmails).text().not_null())
                    .col(ColumnDef::new(Organizations::AlertAction).string_len(16).not_null())
                    .col(ColumnDef::new(Organizations::DeactivationReason).text().not_null())
                    .col(ColumnDef::new(Organizations::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Organizations::UpdateTime).big_integer().not_null())
                    .col(ColumnDef::new(Organizations::DeleteTime).big_integer().null())
                    .col(ColumnDef::new(Organizations::Version).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // Slugs are never reused: the index covers soft-deleted rows too.
        manager
            .create_index(
                Index::create()
                    .name("ux_organizations_slug")
                    .table(Organizations::Table)
                    .col(Organizations::Slug)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_organizations_parent")
                    .table(Organizations::Table)
                    .col(Organizations::ParentId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_organizations_name")
                    .table(Organizations::Table)
                    .col(Organizations::Name)
                    .col(Organizations::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string_len(64).not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string_len(16).not_null())
                    .col(ColumnDef::new(ApiKeys::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(ApiKeys::RevokeTime).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_hash")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeyHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_org")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OrganizationId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Addresses::Table)
                    .col(ColumnDef::new(Addresses::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Addresses::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(Addresses::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Addresses::Line1).string_len(200).not_null())
                    .col(ColumnDef::new(Addresses::Line2).string_len(200).not_null())
                    .col(ColumnDef::new(Addresses::City).string_len(100).not_null())
                    .col(ColumnDef::new(Addresses::Region).string_len(100).not_null())
                    .col(ColumnDef::new(Addresses::PostalCode).string_len(20).not_null())
                    .col(ColumnDef::new(Addresses::Country).string_len(2).not_null())
                    .col(ColumnDef::new(Addresses::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Addresses::UpdateTime).big_integer().not_null())
                    .col(ColumnDef::new(Addresses::Version).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Addresses::Table, Addresses::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_addresses_org")
                    .table(Addresses::Table)
                    .col(Addresses::OrganizationId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Addresses::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Organizations::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub(crate) enum Organizations {
    Table,
    Id,
    Name,
    Slug,
    Kind,
    ParentId,
    Status,
    ContactName,
    ContactEmail,
    Description,
    Interests,
    BillingRateMicros,
    Currency,
    Plan,
    OwnerUserId,
    OwnerEmail,
    OwnerName,
    SpendLimitMicros,
    MaxAgents,
    MaxPhoneNumbers,
    MaxConcurrentCalls,
    AlertThresholds,
    AlertEmails,
    AlertAction,
    DeactivationReason,
    CreateTime,
    UpdateTime,
    DeleteTime,
    Version,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrganizationId,
    KeyHash,
    Prefix,
    CreateTime,
    RevokeTime,
}

#[derive(DeriveIden)]
enum Addresses {
    Table,
    Id,
    OrganizationId,
    Kind,
    Line1,
    Line2,
    City,
    Region,
    PostalCode,
    Country,
    CreateTime,
    UpdateTime,
    Version,
}
