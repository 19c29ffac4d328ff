//! SubscriptionService use cases (SPEC §6) and the feature-flag and account-lifecycle
//! RPCs of OrganizationService (SPEC §4), over the plan catalogue in
//! `settings.billing.catalogue`.
//!
//! The organization's `plan` column mirrors its current plan: every transition that
//! changes the plan (create, an applied change, an operator override, the end of a
//! subscription → `free`) writes it through [`set_plan`], so limits and features are
//! read from the organization row alone. An organization has at most one subscription
//! that is not CANCELED; writers keep that by holding the organization's row lock.
//!
//! Lock order, for every writer here: the organization row ([`orgs::lock_live`]), then
//! the subscription row ([`lock_current`]), then the billing account
//! ([`ledger::lock_account`]), then invoices.

pub mod account;
pub mod addons;
pub mod agreements;
pub mod change;
pub mod cycle;
pub mod events;
pub mod features;
pub mod lifecycle;
pub mod plans;
pub mod read;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, sea_query::LockType,
};
use uuid::Uuid;

use crate::{
    domain::{
        billing::Month,
        ids::{self, IdKind},
        money::{Currency, Money},
        org::OrgKind,
        plans::{Catalogue, FREE_PLAN, Interval, Plan, PlanLimits},
        subscription::SubStatus,
    },
    error::{Error, Result},
    grpc::convert::{etag, money, timestamp},
    proto,
    service::{
        billing::quotas::{account_org_limit, count_usage},
        orgs,
    },
    storage::{
        Tx,
        entities::{organizations, subscriptions},
    },
};

/// The interval of a request field; `None` for UNSPECIFIED or an unknown value.
pub fn interval_of(value: i32) -> Option<Interval> {
    match proto::BillingInterval::try_from(value) {
        Ok(proto::BillingInterval::Month) => Some(Interval::Month),
        Ok(proto::BillingInterval::Year) => Some(Interval::Year),
        _ => None,
    }
}

/// An interval as proto.
pub fn interval_proto(interval: Interval) -> proto::BillingInterval {
    match interval {
        Interval::Month => proto::BillingInterval::Month,
        Interval::Year => proto::BillingInterval::Year,
    }
}

/// A stored interval as proto (UNSPECIFIED when unreadable).
fn stored_interval(text: &str) -> i32 {
    text.parse()
        .map(interval_proto)
        .unwrap_or(proto::BillingInterval::Unspecified) as i32
}

/// A status as proto.
pub fn status_proto(status: SubStatus) -> proto::SubscriptionStatus {
    match status {
        SubStatus::Trialing => proto::SubscriptionStatus::Trialing,
        SubStatus::Active => proto::SubscriptionStatus::Active,
        SubStatus::PastDue => proto::SubscriptionStatus::PastDue,
        SubStatus::Canceled => proto::SubscriptionStatus::Canceled,
    }
}

/// A request status; `None` for UNSPECIFIED or an unknown value.
pub fn status_of(value: i32) -> Option<SubStatus> {
    match proto::SubscriptionStatus::try_from(value) {
        Ok(proto::SubscriptionStatus::Trialing) => Some(SubStatus::Trialing),
        Ok(proto::SubscriptionStatus::Active) => Some(SubStatus::Active),
        Ok(proto::SubscriptionStatus::PastDue) => Some(SubStatus::PastDue),
        Ok(proto::SubscriptionStatus::Canceled) => Some(SubStatus::Canceled),
        _ => None,
    }
}

/// Plan limits as proto.
pub fn limits_proto(limits: &PlanLimits) -> proto::PlanLimits {
    let small = |v: Option<i64>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    proto::PlanLimits {
        max_agents: limits.max_agents,
        max_logs_per_month: limits.max_logs_per_month,
        log_retention_days: small(limits.log_retention_days),
        max_team_members: small(limits.max_team_members),
        max_organizations: small(limits.max_organizations),
    }
}

/// A plan as proto; with `currency`, only that currency's prices.
pub fn plan_proto(plan: &Plan, currency: Option<Currency>) -> proto::Plan {
    proto::Plan {
        id: plan.id.clone(),
        name: plan.name.clone(),
        tier_rank: plan.tier_rank,
        description: plan.description.clone(),
        prices: plan
            .prices
            .iter()
            .filter(|p| currency.is_none_or(|c| c == p.currency))
            .map(|p| proto::PlanPrice {
                interval: interval_proto(p.interval) as i32,
                price: Some(money(Money::from_micros(p.currency, p.micros))),
            })
            .collect(),
        limits: Some(limits_proto(&plan.limits)),
        default_features: plan.default_features.clone(),
    }
}

/// A subscription row as proto.
pub fn to_proto(row: &subscriptions::Model) -> proto::Subscription {
    let currency = row.currency.parse().unwrap_or(Currency::Usd);
    let scheduled = row
        .scheduled_plan_id
        .as_ref()
        .map(|plan_id| proto::ScheduledPlanChange {
            plan_id: plan_id.clone(),
            interval: row
                .scheduled_interval
                .as_deref()
                .map_or_else(|| stored_interval(&row.interval), stored_interval),
            effective_time: timestamp(row.current_period_end),
        });
    proto::Subscription {
        id: ids::encode(IdKind::Subscription, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        plan_id: row.plan_id.clone(),
        interval: stored_interval(&row.interval),
        status: row
            .status
            .parse()
            .map(status_proto)
            .unwrap_or(proto::SubscriptionStatus::Unspecified) as i32,
        price: Some(money(Money::from_micros(currency, row.price_micros))),
        current_period_start: timestamp(row.current_period_start),
        current_period_end: timestamp(row.current_period_end),
        trial_end: row.trial_end.and_then(timestamp),
        cancel_at_period_end: row.cancel_at_period_end,
        scheduled_change: scheduled,
        cancel_request_time: row.cancel_request_time.and_then(timestamp),
        end_time: row.end_time.and_then(timestamp),
        status_reason: row.status_reason.clone(),
        create_time: timestamp(row.create_time),
        update_time: timestamp(row.update_time),
        etag: etag(row.version),
    }
}

/// The organization's subscription that is not CANCELED, if any (unlocked read).
pub async fn current<C: ConnectionTrait>(
    db: &C,
    org_id: Uuid,
) -> Result<Option<subscriptions::Model>> {
    Ok(subscriptions::Entity::find()
        .filter(subscriptions::Column::OrganizationId.eq(org_id))
        .filter(subscriptions::Column::Status.ne(SubStatus::Canceled.as_str()))
        .order_by_desc(subscriptions::Column::CreateTime)
        .one(db)
        .await?)
}

/// [`current`] locked until commit; call after locking the organization row.
pub async fn lock_current(tx: &Tx, org_id: Uuid) -> Result<Option<subscriptions::Model>> {
    Ok(subscriptions::Entity::find()
        .filter(subscriptions::Column::OrganizationId.eq(org_id))
        .filter(subscriptions::Column::Status.ne(SubStatus::Canceled.as_str()))
        .order_by_desc(subscriptions::Column::CreateTime)
        .lock(LockType::Update)
        .one(&**tx)
        .await?)
}

/// FAILED_PRECONDITION `NO_SUBSCRIPTION`: the organization is on the free plan without
/// a subscription.
pub fn no_subscription(org: &organizations::Model) -> Error {
    Error::precondition(
        "NO_SUBSCRIPTION",
        format!(
            "organization {} has no active subscription; create one with CreateSubscription",
            org.slug
        ),
    )
}

/// Applies `change` to a subscription read under its lock, bumping the version; ABORTED
/// when the row changed since it was read.
pub async fn save(
    tx: &Tx,
    current: &subscriptions::Model,
    mut change: subscriptions::ActiveModel,
    now: i64,
) -> Result<subscriptions::Model> {
    change.id = Set(current.id);
    change.update_time = Set(now);
    change.version = Set(current.version + 1);
    let result = subscriptions::Entity::update_many()
        .set(change)
        .filter(subscriptions::Column::Id.eq(current.id))
        .filter(subscriptions::Column::Version.eq(current.version))
        .exec(&**tx)
        .await?;
    if result.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    subscriptions::Entity::find_by_id(current.id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::Internal("subscription vanished under its lock".into()))
}

/// Sets the organization's plan mirror (the caller holds the organization's row lock);
/// bumps its version when the plan changes.
pub async fn set_plan(
    tx: &Tx,
    org: &organizations::Model,
    plan_id: &str,
    now: i64,
) -> Result<organizations::Model> {
    if org.plan == plan_id {
        return Ok(org.clone());
    }
    let row = organizations::ActiveModel {
        plan: Set(plan_id.to_owned()),
        update_time: Set(now),
        version: Set(org.version + 1),
        ..Default::default()
    };
    orgs::save_versioned(tx, row, org.id, org.version).await
}

/// Ends a subscription at `end_time` (CANCELED, no refund; `now` for an immediate end,
/// the period end for a cancellation scheduled there) and puts the organization back
/// on the free plan; an empty `reason` keeps the stored one. The caller holds the
/// organization's and the subscription's locks.
pub async fn end(
    tx: &Tx,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    reason: &str,
    end_time: i64,
    now: i64,
) -> Result<(organizations::Model, subscriptions::Model)> {
    let change = subscriptions::ActiveModel {
        status: Set(SubStatus::Canceled.as_str().to_owned()),
        end_time: Set(Some(end_time)),
        cancel_at_period_end: Set(false),
        cancel_request_time: Set(Some(sub.cancel_request_time.unwrap_or(now))),
        scheduled_plan_id: Set(None),
        scheduled_interval: Set(None),
        status_reason: Set(if reason.is_empty() {
            sub.status_reason.clone()
        } else {
            reason.to_owned()
        }),
        ..Default::default()
    };
    let sub = save(tx, sub, change, now).await?;
    let org = set_plan(tx, org, FREE_PLAN, now).await?;
    Ok((org, sub))
}

/// Organizations counted against `max_organizations`: an agency's live tenants; for
/// any other organization, the live organizations owned by the same user (itself when
/// it has no owner yet).
pub async fn organizations_count<C: ConnectionTrait>(
    db: &C,
    org: &organizations::Model,
) -> Result<i64> {
    let count = if org.kind == OrgKind::Agency.as_str() {
        organizations::Entity::find()
            .filter(organizations::Column::ParentId.eq(org.id))
            .filter(organizations::Column::DeleteTime.is_null())
            .count(db)
            .await?
    } else if org.owner_user_id.is_empty() {
        1
    } else {
        owned_count(db, &org.owner_user_id).await?
    };
    Ok(i64::try_from(count).unwrap_or(i64::MAX))
}

/// Live organizations owned by user `sub`.
async fn owned_count<C: ConnectionTrait>(db: &C, sub: &str) -> Result<u64> {
    Ok(owned_query(sub).count(db).await?)
}

/// The live organizations owned by user `sub`.
pub async fn owned<C: ConnectionTrait>(db: &C, sub: &str) -> Result<Vec<organizations::Model>> {
    Ok(owned_query(sub).all(db).await?)
}

fn owned_query(sub: &str) -> sea_orm::Select<organizations::Entity> {
    organizations::Entity::find()
        .filter(organizations::Column::OwnerUserId.eq(sub))
        .filter(organizations::Column::DeleteTime.is_null())
}

/// The `max_organizations` that holds for `org` once it is on `plan`: an agency's (and
/// an organization without owner's) is the plan's; any other organization shares its
/// owner's account limit ([`account_org_limit`]), computed with `org` on `plan`.
pub async fn org_limit_on<C: ConnectionTrait>(
    db: &C,
    catalogue: &Catalogue,
    org: &organizations::Model,
    plan: &Plan,
) -> Result<Option<i64>> {
    if org.kind == OrgKind::Agency.as_str() || org.owner_user_id.is_empty() {
        return Ok(plan.limits.max_organizations);
    }
    let owned: Vec<organizations::Model> = owned(db, &org.owner_user_id)
        .await?
        .into_iter()
        .map(|o| {
            if o.id == org.id {
                organizations::Model {
                    plan: plan.id.clone(),
                    ..o
                }
            } else {
                o
            }
        })
        .collect();
    Ok(account_org_limit(catalogue, &owned))
}

/// The organization's current usage of the limits a plan sets (`now` picks the month).
pub async fn usage<C: ConnectionTrait>(
    db: &C,
    org: &organizations::Model,
    now: i64,
) -> Result<proto::SubscriptionUsage> {
    let counts = count_usage(db, org.id, &Month::of(now).to_string()).await?;
    Ok(proto::SubscriptionUsage {
        agents_count: counts.agents,
        logs_this_month: counts.used(|c| c.logs),
        team_members_count: counts.team_members,
        organizations_count: organizations_count(db, org).await?,
    })
}

/// The limits of `limits` that `usage` already exceeds (what blocks a downgrade).
pub fn exceeded(
    limits: &PlanLimits,
    usage: &proto::SubscriptionUsage,
) -> Vec<proto::PlanLimitViolation> {
    [
        ("max_agents", usage.agents_count, limits.max_agents),
        (
            "max_logs_per_month",
            usage.logs_this_month,
            limits.max_logs_per_month,
        ),
        (
            "max_team_members",
            usage.team_members_count,
            limits.max_team_members,
        ),
        (
            "max_organizations",
            usage.organizations_count,
            limits.max_organizations,
        ),
    ]
    .into_iter()
    .filter_map(|(limit, current, allowed)| {
        let allowed = allowed?;
        (current > allowed).then(|| proto::PlanLimitViolation {
            limit: limit.to_owned(),
            current,
            allowed,
        })
    })
    .collect()
}

/// RESOURCE_EXHAUSTED `PLAN_LIMIT_REACHED` for one limit, with the numbers.
pub fn limit_reached(
    org: &organizations::Model,
    limit: &'static str,
    current: i64,
    allowed: i64,
) -> Error {
    Error::rejected(
        tonic::Code::ResourceExhausted,
        "PLAN_LIMIT_REACHED",
        format!(
            "{limit} is {allowed} for this organization (plan {}) and it has {current}; upgrade the plan for more",
            org.plan
        ),
    )
    .with("limit", limit)
    .with("current", current)
    .with("allowed", allowed)
    .with("plan", &org.plan)
}
