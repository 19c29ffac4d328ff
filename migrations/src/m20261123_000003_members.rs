//! Members, invitations and pre-approved signups.

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
                    .table(Members::Table)
                    .col(ColumnDef::new(Members::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Members::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(Members::UserId).string_len(255).not_null())
                    .col(ColumnDef::new(Members::Email).string_len(254).not_null())
                    .col(ColumnDef::new(Members::Name).string_len(200).not_null())
                    .col(ColumnDef::new(Members::Role).string_len(32).not_null())
                    .col(ColumnDef::new(Members::IsOwner).boolean().not_null())
                    .col(ColumnDef::new(Members::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Members::UpdateTime).big_integer().not_null())
                    .col(ColumnDef::new(Members::Version).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Members::Table, Members::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_members_org_email")
                    .table(Members::Table)
                    .col(Members::OrganizationId)
                    .col(Members::Email)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Invitations::Table)
                    .col(ColumnDef::new(Invitations::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Invitations::OrganizationId).uuid().not_null())
                    .col(ColumnDef::new(Invitations::Email).string_len(254).not_null())
                    .col(ColumnDef::new(Invitations::Name).string_len(200).not_null())
                    .col(ColumnDef::new(Invitations::Role).string_len(32).not_null())
                    .col(ColumnDef::new(Invitations::IsOwner).boolean().not_null())
                    .col(ColumnDef::new(Invitations::TokenHash).string_len(64).not_null())
                    .col(ColumnDef::new(Invitations::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Invitations::Inviter).string_len(255).not_null())
                    .col(ColumnDef::new(Invitations::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Invitations::ExpireTime).big_integer().not_null())
                    .col(ColumnDef::new(Invitations::AcceptTime).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Invitations::Table, Invitations::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_invitations_token")
                    .table(Invitations::Table)
                    .col(Invitations::TokenHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_invitations_org")
                    .table(Invitations::Table)
                    .col(Invitations::OrganizationId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PreApprovedSignups::Table)
                    .col(
                        ColumnDef::new(PreApprovedSignups::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PreApprovedSignups::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(PreApprovedSignups::Email).string_len(254).null())
                    .col(ColumnDef::new(PreApprovedSignups::Code).string_len(64).null())
                    .col(ColumnDef::new(PreApprovedSignups::MaxUses).integer().not_null())
                    .col(ColumnDef::new(PreApprovedSignups::UseCount).integer().not_null())
                    .col(
                        ColumnDef::new(PreApprovedSignups::ExpireTime)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(PreApprovedSignups::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PreApprovedSignups::DeleteTime)
                            .big_integer()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(PreApprovedSignups::Table, PreApprovedSignups::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_pre_approved_signups_email")
                    .table(PreApprovedSignups::Table)
                    .col(PreApprovedSignups::Email)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_pre_approved_signups_code")
                    .table(PreApprovedSignups::Table)
                    .col(PreApprovedSignups::Code)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PreApprovedSignups::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Invitations::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Members::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
    OrganizationId,
    UserId,
    Email,
    Name,
    Role,
    IsOwner,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    OrganizationId,
    Email,
    Name,
    Role,
    IsOwner,
    TokenHash,
    Status,
    Inviter,
    CreateTime,
    ExpireTime,
    AcceptTime,
}

#[derive(DeriveIden)]
enum PreApprovedSignups {
    Table,
    Id,
    OrganizationId,
    Email,
    Code,
    MaxUses,
    UseCount,
    ExpireTime,
    CreateTime,
    DeleteTime,
}
