//! Events and transfers: the transactional outbox (`outbox_events`, numbered in commit
//! order by the sequencer through the one-row `event_sequence`), webhook endpoints and
//! their deliveries (one row per event × endpoint, retried with backoff, dead-lettered),
//! queued emails, tenant transfers between agencies (at most one PENDING per tenant,
//! kept by a partial unique index) and the registry of external assets.

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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use OutboxEvents as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .col(id(E::Id))
                    .col(opt_big(E::Position))
                    .col(uuid(E::OrganizationId))
                    .col(opt_uuid(E::AgencyId))
                    .col(string(E::EventType, 64))
                    .col(text(E::Payload))
                    .col(string(E::RequestId, 128))
                    .col(big(E::CreateTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_outbox_events_position",
            E::Table,
            &[E::Position],
            true,
        )
        .await?;
        create_index(
            manager,
            "ix_outbox_events_organization",
            E::Table,
            &[E::OrganizationId, E::Position],
            false,
        )
        .await?;
        create_index(
            manager,
            "ix_outbox_events_agency",
            E::Table,
            &[E::AgencyId, E::Position],
            false,
        )
        .await?;

        use EventSequence as Q;
        manager
            .create_table(
                Table::create()
                    .table(Q::Table)
                    .col(ColumnDef::new(Q::Id).integer().not_null().primary_key())
                    .col(big(Q::LastPosition))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(Q::Table)
                    .columns([Q::Id, Q::LastPosition])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;

        use WebhookEndpoints as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .col(id(W::Id))
                    .col(uuid(W::OrganizationId))
                    .col(string(W::Url, 2048))
                    .col(text(W::EventTypes))
                    .col(string(W::Description, 500))
                    .col(string(W::Secret, 128))
                    .col(string(W::CreatedBy, 256))
                    .col(flag(W::IncludeTenants))
                    .col(big(W::CreateTime))
                    .col(big(W::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ix_webhook_endpoints_organization",
            W::Table,
            &[W::OrganizationId, W::CreateTime],
            false,
        )
        .await?;

        use WebhookDeliveries as D;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .col(id(D::Id))
                    .col(uuid(D::EventId))
                    .col(uuid(D::EndpointId))
                    .col(uuid(D::OrganizationId))
                    .col(string(D::Status, 16))
                    .col(big(D::Attempts))
                    .col(big(D::NextAttemptTime))
                    .col(opt_big(D::LeaseUntil))
                    .col(opt_big(D::LastStatusCode))
                    .col(text(D::LastError))
                    .col(big(D::CreateTime))
                    .col(big(D::UpdateTime))
                    .col(opt_big(D::DeliverTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_webhook_deliveries_event_endpoint",
            D::Table,
            &[D::EventId, D::EndpointId],
            true,
        )
        .await?;
        create_index(
            manager,
            "ix_webhook_deliveries_due",
            D::Table,
            &[D::Status, D::NextAttemptTime],
            false,
        )
        .await?;
        create_index(
            manager,
            "ix_webhook_deliveries_endpoint",
            D::Table,
            &[D::EndpointId],
            false,
        )
        .await?;

        use EmailMessages as M;
        manager
            .create_table(
                Table::create()
                    .table(M::Table)
                    .col(id(M::Id))
                    .col(uuid(M::OrganizationId))
                    .col(opt_uuid(M::EventId))
                    .col(string(M::Kind, 32))
                    .col(string(M::ToAddress, 320))
                    .col(string(M::Subject, 300))
                    .col(text(M::Body))
                    .col(string(M::Status, 16))
                    .col(big(M::Attempts))
                    .col(big(M::NextAttemptTime))
                    .col(opt_big(M::LeaseUntil))
                    .col(text(M::LastError))
                    .col(big(M::CreateTime))
                    .col(big(M::UpdateTime))
                    .col(opt_big(M::SendTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ix_email_messages_due",
            M::Table,
            &[M::Status, M::NextAttemptTime],
            false,
        )
        .await?;

        use TenantTransfers as T;
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .col(id(T::Id))
                    .col(uuid(T::TenantOrganizationId))
                    .col(opt_uuid(T::SourceAgencyId))
                    .col(opt_uuid(T::TargetAgencyId))
                    .col(flag(T::ToSelfManaged))
                    .col(string(T::Status, 16))
                    .col(text(T::Note))
                    .col(string(T::RequestedBy, 256))
                    .col(opt_uuid(T::RequesterOrganizationId))
                    .col(string(T::DecidedBy, 256))
                    .col(text(T::DecisionNote))
                    .col(big(T::ExpireTime))
                    .col(big(T::CreateTime))
                    .col(opt_big(T::DecideTime))
                    .col(big(T::UpdateTime))
                    .col(string(T::RequestId, 128))
                    .col(big(T::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ix_tenant_transfers_tenant",
            T::Table,
            &[T::TenantOrganizationId, T::CreateTime],
            false,
        )
        .await?;
        create_index(
            manager,
            "ix_tenant_transfers_source",
            T::Table,
            &[T::SourceAgencyId, T::CreateTime],
            false,
        )
        .await?;
        create_index(
            manager,
            "ix_tenant_transfers_target",
            T::Table,
            &[T::TargetAgencyId, T::CreateTime],
            false,
        )
        .await?;
        create_index(
            manager,
            "ix_tenant_transfers_expiry",
            T::Table,
            &[T::Status, T::ExpireTime],
            false,
        )
        .await?;
        // At most one PENDING transfer per tenant, whatever the application does.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_tenant_transfers_one_pending \
                 ON tenant_transfers (tenant_organization_id) WHERE status = 'PENDING'",
            )
            .await?;

        use ExternalAssets as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .col(id(A::Id))
                    .col(uuid(A::OrganizationId))
                    .col(string(A::ExternalType, 64))
                    .col(string(A::ExternalId, 256))
                    .col(string(A::DisplayName, 200))
                    .col(text(A::Attributes))
                    .col(string(A::RegisteredBy, 256))
                    .col(big(A::CreateTime))
                    .col(big(A::UpdateTime))
                    .col(big(A::Version))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ux_external_assets_identity",
            A::Table,
            &[A::OrganizationId, A::ExternalType, A::ExternalId],
            true,
        )
        .await?;
        create_index(
            manager,
            "ix_external_assets_organization",
            A::Table,
            &[A::OrganizationId, A::CreateTime],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ExternalAssets::Table.into_iden(),
            TenantTransfers::Table.into_iden(),
            EmailMessages::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
            EventSequence::Table.into_iden(),
            OutboxEvents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone)]
enum OutboxEvents {
    Table,
    Id,
    Position,
    OrganizationId,
    AgencyId,
    EventType,
    Payload,
    RequestId,
    CreateTime,
}

#[derive(DeriveIden, Clone)]
enum EventSequence {
    Table,
    Id,
    LastPosition,
}

#[derive(DeriveIden, Clone)]
enum WebhookEndpoints {
    Table,
    Id,
    OrganizationId,
    Url,
    EventTypes,
    Description,
    Secret,
    CreatedBy,
    IncludeTenants,
    CreateTime,
    Version,
}

#[derive(DeriveIden, Clone)]
enum WebhookDeliveries {
    Table,
    Id,
    EventId,
    EndpointId,
    OrganizationId,
    Status,
    Attempts,
    NextAttemptTime,
    LeaseUntil,
    LastStatusCode,
    LastError,
    CreateTime,
    UpdateTime,
    DeliverTime,
}

#[derive(DeriveIden, Clone)]
enum EmailMessages {
    Table,
    Id,
    OrganizationId,
    EventId,
    Kind,
    ToAddress,
    Subject,
    Body,
    Status,
    Attempts,
    NextAttemptTime,
    LeaseUntil,
    LastError,
    CreateTime,
    UpdateTime,
    SendTime,
}

#[derive(DeriveIden, Clone)]
enum TenantTransfers {
    Table,
    Id,
    TenantOrganizationId,
    SourceAgencyId,
    TargetAgencyId,
    ToSelfManaged,
    Status,
    Note,
    RequestedBy,
    RequesterOrganizationId,
    DecidedBy,
    DecisionNote,
    ExpireTime,
    CreateTime,
    DecideTime,
    UpdateTime,
    RequestId,
    Version,
}

#[derive(DeriveIden, Clone)]
enum ExternalAssets {
    Table,
    Id,
    OrganizationId,
    ExternalType,
    ExternalId,
    DisplayName,
    Attributes,
    RegisteredBy,
    CreateTime,
    UpdateTime,
    Version,
}
