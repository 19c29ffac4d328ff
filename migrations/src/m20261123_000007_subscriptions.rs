//! Subscriptions: one row per subscription (at most one not CANCELED per organization,
//! kept by the organization's row lock), the closed renewal periods (one row per
//! subscription and period end: the database-level guard that no period is invoiced
//! twice), add-on purchases and service agreements. Organizations gain their feature
//! flag overrides (JSON object flag → bool) and a scheduled data deletion instant;
//! billing records gain the invoice that billed their agent fee.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn id<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).uuid().not_null().primary_key().take()
}

fn uuid<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).uuid().not_null().take()
}

fn opt_uuid<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).uuid().null().take()
}

fn big<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().take()
}

fn opt_big<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().take()
}

fn string<T: IntoIden>(col: T, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).not_null().take()
}

fn opt_string<T: IntoIden>(col: T, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).null().take()
}

fn text<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).text().not_null().take()
}

fn flag<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).boolean().not_null().take()
}

async fn create_index<C: IntoIden + Clone + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden + Clone + 'static,
    cols: &[C],
    unique: bool,
) -> Result<(), DbErr> {
    let mut stmt = Index::create().name(name).table(table).take();
    for col in cols {
        stmt.col(col.clone());
    }
    if unique {
        stmt.unique();
    }
    manager.create_index(stmt).await
}

async fn add_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden + 'static,
    col: ColumnDef,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).add_column(col).to_owned())
        .await
}

async fn drop_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden + 'static,
    col: impl IntoIden + 'static,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).drop_column(col).to_owned())
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Subscriptions as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .col(id(S::Id))
                    .col(uuid(S::OrganizationId))
                    .col(string(S::PlanId, 64))
                    .col(string(S::Interval, 8))
                    .col(string(S::Status, 16))
                    .col(string(S::Currency, 3))
                    .col(big(S::PriceMicros))
                    .col(big(S::AnchorTime))
                    .col(big(S::CurrentPeriodStart))
                    .col(big(S::CurrentPeriodEnd))
                    .col(opt_big(S::TrialEnd))
                    .col(flag(S::CancelAtPeriodEnd))
                    .col(opt_big(S::CancelRequestTime))
                    .col(opt_big(S::EndTime))
                    .col(opt_string(S::ScheduledPlanId, 64))
                    .col(opt_string(S::ScheduledInterval, 8))
                    .col(text(S::StatusReason))
                    .col(opt_uuid(S::LatestInvoiceId))
                    .col(string(S::RequestId, 128))
                    .col(big(S::CreateTime))
                    .col(big(S::UpdateTime))
                    .col(big(S::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ix_subscriptions_organization",
            S::Table,
            &[S::OrganizationId, S::CreateTime],
            false,
        )
        .await?;
        create_index(
            manager,
            "ix_subscriptions_due",
            S::Table,
            &[S::Status, S::CurrentPeriodEnd],
            false,
        )
        .await?;

        use SubscriptionPeriods as P;
        manager
            .create_table(
                Table::create()
                    .table(P::Table)
                    .col(uuid(P::SubscriptionId))
                    .col(big(P::PeriodEnd))
                    .col(uuid(P::OrganizationId))
                    .col(opt_uuid(P::InvoiceId))
                    .col(big(P::CreateTime))
                    .primary_key(Index::create().col(P::SubscriptionId).col(P::PeriodEnd))
                    .to_owned(),
            )
            .await?;

        use ServicePurchases as SP;
        manager
            .create_table(
                Table::create()
                    .table(SP::Table)
                    .col(id(SP::Id))
                    .col(uuid(SP::OrganizationId))
                    .col(string(SP::ServiceId, 64))
                    .col(string(SP::ServiceName, 200))
                    .col(big(SP::Quantity))
                    .col(big(SP::UnitAmountMicros))
                    .col(big(SP::AmountMicros))
                    .col(string(SP::Currency, 3))
                    .col(string(SP::ChargeType, 16))
                    .col(string(SP::PaymentSource, 16))
                    .col(string(SP::Status, 16))
                    .col(opt_uuid(SP::TransactionId))
                    .col(string(SP::Gateway, 32))
                    .col(opt_string(SP::PaymentIntentId, 255))
                    .col(opt_uuid(SP::AgreementId))
                    .col(string(SP::RequestId, 128))
                    .col(string(SP::PurchasedBy, 300))
                    .col(text(SP::FailureReason))
                    .col(opt_big(SP::ActivateTime))
                    .col(opt_big(SP::CancelTime))
                    .col(big(SP::CreateTime))
                    .col(big(SP::UpdateTime))
                    .col(big(SP::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ix_service_purchases_organization",
            SP::Table,
            &[SP::OrganizationId, SP::CreateTime],
            false,
        )
        .await?;
        create_index(
            manager,
            "ux_service_purchases_intent",
            SP::Table,
            &[SP::PaymentIntentId],
            true,
        )
        .await?;

        use ServiceAgreements as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .col(id(A::Id))
                    .col(uuid(A::OrganizationId))
                    .col(string(A::ServiceId, 64))
                    .col(string(A::TermsVersion, 64))
                    .col(string(A::Status, 16))
                    .col(text(A::Metadata))
                    .col(string(A::AcceptedBy, 300))
                    .col(big(A::AcceptTime))
                    .col(string(A::RevokedBy, 300))
                    .col(opt_big(A::RevokeTime))
                    .col(text(A::RevokeReason))
                    .col(string(A::RequestId, 128))
                    .col(big(A::UpdateTime))
                    .col(big(A::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ix_service_agreements_organization",
            A::Table,
            &[A::OrganizationId, A::ServiceId, A::Status],
            false,
        )
        .await?;

        add_column(
            manager,
            Organizations::Table,
            ColumnDef::new(Organizations::FeatureOverrides)
                .text()
                .not_null()
                .default("{}")
                .take(),
        )
        .await?;
        add_column(
            manager,
            Organizations::Table,
            opt_big(Organizations::DataDeletionTime),
        )
        .await?;
        add_column(
            manager,
            BillingRecords::Table,
            opt_uuid(BillingRecords::InvoiceId),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_column(manager, BillingRecords::Table, BillingRecords::InvoiceId).await?;
        drop_column(
            manager,
            Organizations::Table,
            Organizations::DataDeletionTime,
        )
        .await?;
        drop_column(
            manager,
            Organizations::Table,
            Organizations::FeatureOverrides,
        )
        .await?;
        for table in [
            ServiceAgreements::Table.into_iden(),
            ServicePurchases::Table.into_iden(),
            SubscriptionPeriods::Table.into_iden(),
            Subscriptions::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone)]
enum Subscriptions {
    Table,
    Id,
    OrganizationId,
    PlanId,
    Interval,
    Status,
    Currency,
    PriceMicros,
    AnchorTime,
    CurrentPeriodStart,
    CurrentPeriodEnd,
    TrialEnd,
    CancelAtPeriodEnd,
    CancelRequestTime,
    EndTime,
    ScheduledPlanId,
    ScheduledInterval,
    StatusReason,
    LatestInvoiceId,
    RequestId,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden, Clone)]
enum SubscriptionPeriods {
    Table,
    SubscriptionId,
    PeriodEnd,
    OrganizationId,
    InvoiceId,
    CreateTime,
}

#[derive(DeriveIden, Clone)]
enum ServicePurchases {
    Table,
    Id,
    OrganizationId,
    ServiceId,
    ServiceName,
    Quantity,
    UnitAmountMicros,
    AmountMicros,
    Currency,
    ChargeType,
    PaymentSource,
    Status,
    TransactionId,
    Gateway,
    PaymentIntentId,
    AgreementId,
    RequestId,
    PurchasedBy,
    FailureReason,
    ActivateTime,
    CancelTime,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden, Clone)]
enum ServiceAgreements {
    Table,
    Id,
    OrganizationId,
    ServiceId,
    TermsVersion,
    Status,
    Metadata,
    AcceptedBy,
    AcceptTime,
    RevokedBy,
    RevokeTime,
    RevokeReason,
    RequestId,
    UpdateTime,
    Version,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    FeatureOverrides,
    DataDeletionTime,
}

#[derive(DeriveIden)]
enum BillingRecords {
    Table,
    InvoiceId,
}
