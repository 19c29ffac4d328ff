//! The root organization (`internal`, kind ROOT): the platform operator and the home of
//! unassigned agents. Created exactly once, by this step.

use sea_orm::prelude::Uuid;
use sea_orm_migration::prelude::*;

use crate::m20261123_000001_organizations::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Slug of the root organization.
pub const ROOT_SLUG: &str = "internal";

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| <i64 as std::convert::TryFrom<u128>>::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let now = now_micros();
        let insert = Query::insert()
            .into_table(Organizations::Table)
            .columns([
                Organizations::Id,
                Organizations::Name,
                Organizations::Slug,
                Organizations::Kind,
                Organizations::Status,
                Organizations::ContactName,
                Organizations::ContactEmail,
                Organizations::Description,
                Organizations::Interests,
                Organizations::BillingRateMicros,
                Organizations::Currency,
                Organizations::Plan,
                Organizations::OwnerUserId,
                Organizations::OwnerEmail,
                Organizations::OwnerName,
                Organizations::MaxAgents,
                Organizations::MaxPhoneNumbers,
                Organizations::MaxConcurrentCalls,
                Organizations::AlertThresholds,
                Organizations::AlertEmails,
                Organizations::AlertAction,
                Organizations::DeactivationReason,
                Organizations::CreateTime,
                Organizations::UpdateTime,
                Organizations::Version,
            ])
            .values_panic([
                Uuid::now_v7().into(),
                "Internal".into(),
                ROOT_SLUG.into(),
                "ROOT".into(),
                "ACTIVE".into(),
                "".into(),
                "".into(),
                "The platform operator; unassigned agents live here.".into(),
                "[]".into(),
                0i64.into(),
                "USD".into(),
                "enterprise".into(),
                "".into(),
                "".into(),
                "".into(),
                0i32.into(),
                0i32.into(),
                0i32.into(),
                "[]".into(),
                "[]".into(),
                "NOTIFY_ONLY".into(),
                "".into(),
                now.into(),
                now.into(),
                1i64.into(),
            ])
            .to_owned();
        manager.exec_stmt(insert).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let delete = Query::delete()
            .from_table(Organizations::Table)
            .and_where(Expr::col(Organizations::Slug).eq(ROOT_SLUG))
            .to_owned();
        manager.exec_stmt(delete).await
    }
}
