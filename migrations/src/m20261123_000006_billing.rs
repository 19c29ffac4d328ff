//! Billing: usage events and their per-month counters, billing records, spend alerts,
//! the credits ledger with one account row per organization (balance and invoice
//! sequence), `manual` payment intents, received Stripe webhook events, and invoices
//! with their lines.

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

fn text<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).text().not_null().take()
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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use UsageEvents as U;
        manager
            .create_table(
                Table::create()
                    .table(U::Table)
                    .col(id(U::Id))
                    .col(uuid(U::OrganizationId))
                    .col(string(U::EventId, 128))
                    .col(uuid(U::AgentId))
                    .col(string(U::Metric, 16))
                    .col(big(U::Quantity))
                    .col(big(U::CostMicros))
                    .col(big(U::OccurredAt))
                    .col(string(U::Month, 7))
                    .col(string(U::Channel, 256))
                    .col(text(U::Dimensions))
                    .col(string(U::RecordedBy, 300))
                    .col(big(U::CreateTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_usage_events_org_event",
            U::Table,
            &[U::OrganizationId, U::EventId],
            true,
        )
        .await?;
        create_index(
            manager,
            "ix_usage_events_org_time",
            U::Table,
            &[U::OrganizationId, U::OccurredAt],
            false,
        )
        .await?;

        use UsageCounters as C;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .col(uuid(C::OrganizationId))
                    .col(string(C::Month, 7))
                    .col(big(C::CostMicros))
                    .col(big(C::Tokens))
                    .col(big(C::Messages))
                    .col(big(C::Conversations))
                    .col(big(C::Minutes))
                    .col(big(C::Logs))
                    .col(big(C::Events))
                    .col(big(C::UpdateTime))
                    .primary_key(Index::create().col(C::OrganizationId).col(C::Month))
                    .to_owned(),
            )
            .await?;

        use BillingRecords as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(id(R::Id))
                    .col(uuid(R::OrganizationId))
                    .col(uuid(R::AgentId))
                    .col(string(R::Month, 7))
                    .col(string(R::AgentName, 100))
                    .col(big(R::Tokens))
                    .col(big(R::CostMicros))
                    .col(big(R::RevenueMicros))
                    .col(ColumnDef::new(R::CustomRate).boolean().not_null())
                    .col(big(R::CreateTime))
                    .col(big(R::UpdateTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_billing_records_org_agent_month",
            R::Table,
            &[R::OrganizationId, R::AgentId, R::Month],
            true,
        )
        .await?;
        create_index(
            manager,
            "ix_billing_records_org_month",
            R::Table,
            &[R::OrganizationId, R::Month],
            false,
        )
        .await?;

        use SpendAlerts as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .col(id(S::Id))
                    .col(uuid(S::OrganizationId))
                    .col(string(S::Month, 7))
                    .col(ColumnDef::new(S::Threshold).integer().not_null())
                    .col(big(S::MonthToDateMicros))
                    .col(big(S::LimitMicros))
                    .col(big(S::TriggerTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_spend_alerts_org_month_threshold",
            S::Table,
            &[S::OrganizationId, S::Month, S::Threshold],
            true,
        )
        .await?;

        use BillingAccounts as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .col(id(A::OrganizationId))
                    .col(string(A::Currency, 3))
                    .col(big(A::BalanceMicros))
                    .col(big(A::InvoiceSeq))
                    .col(big(A::CreateTime))
                    .col(big(A::UpdateTime))
                    .to_owned(),
            )
            .await?;

        use CreditTransactions as T;
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .col(id(T::Id))
                    .col(uuid(T::OrganizationId))
                    .col(string(T::Kind, 24))
                    .col(string(T::Status, 16))
                    .col(big(T::AmountMicros))
                    .col(opt_big(T::BalanceAfterMicros))
                    .col(string(T::Currency, 3))
                    .col(text(T::Reason))
                    .col(string(T::RequestId, 128))
                    .col(string(T::Author, 300))
                    .col(string(T::Gateway, 16))
                    .col(ColumnDef::new(T::PaymentIntentId).string_len(255).null())
                    .col(opt_uuid(T::InvoiceId))
                    .col(opt_uuid(T::CounterpartyOrganizationId))
                    .col(opt_uuid(T::RelatedTransactionId))
                    .col(text(T::FailureReason))
                    .col(big(T::CreateTime))
                    .col(big(T::UpdateTime))
                    .col(big(T::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ix_credit_transactions_org_time",
            T::Table,
            &[T::OrganizationId, T::CreateTime],
            false,
        )
        .await?;
        create_index(
            manager,
            "ux_credit_transactions_intent",
            T::Table,
            &[T::PaymentIntentId],
            true,
        )
        .await?;

        use PaymentIntents as P;
        manager
            .create_table(
                Table::create()
                    .table(P::Table)
                    .col(
                        ColumnDef::new(P::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(uuid(P::OrganizationId))
                    .col(big(P::AmountMicros))
                    .col(string(P::Currency, 3))
                    .col(string(P::Status, 32))
                    .col(string(P::ClientSecret, 128))
                    .col(string(P::IdempotencyKey, 255))
                    .col(text(P::Metadata))
                    .col(big(P::CreateTime))
                    .col(big(P::UpdateTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_payment_intents_idempotency",
            P::Table,
            &[P::IdempotencyKey],
            true,
        )
        .await?;

        use StripeEvents as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .col(
                        ColumnDef::new(E::Id)
                            .string_len(255)
                            .not_null()
                            .primary_key(),
                    )
                    .col(string(E::Kind, 64))
                    .col(string(E::PaymentIntentId, 255))
                    .col(big(E::ReceiveTime))
                    .to_owned(),
            )
            .await?;

        use Invoices as I;
        manager
            .create_table(
                Table::create()
                    .table(I::Table)
                    .col(id(I::Id))
                    .col(uuid(I::OrganizationId))
                    .col(big(I::Seq))
                    .col(string(I::Number, 32))
                    .col(opt_uuid(I::SubscriptionId))
                    .col(big(I::PeriodStart))
                    .col(big(I::PeriodEnd))
                    .col(big(I::SubtotalMicros))
                    .col(big(I::TotalMicros))
                    .col(big(I::AmountPaidMicros))
                    .col(string(I::Currency, 3))
                    .col(string(I::Status, 16))
                    .col(opt_big(I::IssueTime))
                    .col(opt_big(I::DueTime))
                    .col(opt_big(I::PaidTime))
                    .col(opt_big(I::VoidTime))
                    .col(text(I::Memo))
                    .col(text(I::StatusReason))
                    .col(opt_uuid(I::PaymentTransactionId))
                    .col(big(I::CreateTime))
                    .col(big(I::UpdateTime))
                    .col(big(I::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_invoices_org_seq",
            I::Table,
            &[I::OrganizationId, I::Seq],
            true,
        )
        .await?;
        create_index(
            manager,
            "ix_invoices_org_time",
            I::Table,
            &[I::OrganizationId, I::CreateTime],
            false,
        )
        .await?;

        use InvoiceLines as L;
        manager
            .create_table(
                Table::create()
                    .table(L::Table)
                    .col(id(L::Id))
                    .col(uuid(L::InvoiceId))
                    .col(ColumnDef::new(L::Position).integer().not_null())
                    .col(text(L::Description))
                    .col(string(L::Kind, 24))
                    .col(big(L::Quantity))
                    .col(big(L::UnitAmountMicros))
                    .col(big(L::AmountMicros))
                    .col(big(L::PeriodStart))
                    .col(big(L::PeriodEnd))
                    .col(string(L::PlanId, 63))
                    .col(opt_uuid(L::AgentId))
                    .col(string(L::ServiceId, 63))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_invoice_lines_invoice_position",
            L::Table,
            &[L::InvoiceId, L::Position],
            true,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            InvoiceLines::Table.into_iden(),
            Invoices::Table.into_iden(),
            StripeEvents::Table.into_iden(),
            PaymentIntents::Table.into_iden(),
            CreditTransactions::Table.into_iden(),
            BillingAccounts::Table.into_iden(),
            SpendAlerts::Table.into_iden(),
            BillingRecords::Table.into_iden(),
            UsageCounters::Table.into_iden(),
            UsageEvents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone)]
enum UsageEvents {
    Table,
    Id,
    OrganizationId,
    EventId,
    AgentId,
    Metric,
    Quantity,
    CostMicros,
    OccurredAt,
    Month,
    Channel,
    Dimensions,
    RecordedBy,
    CreateTime,
}

#[derive(DeriveIden, Clone)]
enum UsageCounters {
    Table,
    OrganizationId,
    Month,
    CostMicros,
    Tokens,
    Messages,
    Conversations,
    Minutes,
    Logs,
    Events,
    UpdateTime,
}

#[derive(DeriveIden, Clone)]
enum BillingRecords {
    Table,
    Id,
    OrganizationId,
    AgentId,
    Month,
    AgentName,
    Tokens,
    CostMicros,
    RevenueMicros,
    CustomRate,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden, Clone)]
enum SpendAlerts {
    Table,
    Id,
    OrganizationId,
    Month,
    Threshold,
    MonthToDateMicros,
    LimitMicros,
    TriggerTime,
}

#[derive(DeriveIden, Clone)]
enum BillingAccounts {
    Table,
    OrganizationId,
    Currency,
    BalanceMicros,
    InvoiceSeq,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden, Clone)]
enum CreditTransactions {
    Table,
    Id,
    OrganizationId,
    Kind,
    Status,
    AmountMicros,
    BalanceAfterMicros,
    Currency,
    Reason,
    RequestId,
    Author,
    Gateway,
    PaymentIntentId,
    InvoiceId,
    CounterpartyOrganizationId,
    RelatedTransactionId,
    FailureReason,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden, Clone)]
enum PaymentIntents {
    Table,
    Id,
    OrganizationId,
    AmountMicros,
    Currency,
    Status,
    ClientSecret,
    IdempotencyKey,
    Metadata,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden, Clone)]
enum StripeEvents {
    Table,
    Id,
    Kind,
    PaymentIntentId,
    ReceiveTime,
}

#[derive(DeriveIden, Clone)]
enum Invoices {
    Table,
    Id,
    OrganizationId,
    Seq,
    Number,
    SubscriptionId,
    PeriodStart,
    PeriodEnd,
    SubtotalMicros,
    TotalMicros,
    AmountPaidMicros,
    Currency,
    Status,
    IssueTime,
    DueTime,
    PaidTime,
    VoidTime,
    Memo,
    StatusReason,
    PaymentTransactionId,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden, Clone)]
enum InvoiceLines {
    Table,
    Id,
    InvoiceId,
    Position,
    Description,
    Kind,
    Quantity,
    UnitAmountMicros,
    AmountMicros,
    PeriodStart,
    PeriodEnd,
    PlanId,
    AgentId,
    ServiceId,
}
