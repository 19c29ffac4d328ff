//! GetUsage: quotas against plan limits, with warnings at 80 % and 100 %.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        billing::{Month, percentage},
        org::OrgKind,
        plans::{Catalogue, PlanLimits},
    },
    error::Result,
    grpc::Ctx,
    proto::{self, UsageMetric, UsageWarningSeverity},
    service::{agent_count, subscriptions::organizations_count},
    storage::entities::{members, organizations, usage_counters},
};

/// The limits in force for an organization: its plan's (from the catalogue), with
/// `max_agents` capped by the organization's own usage limit (`organizations.max_agents`,
/// 0 = none) when that is smaller. The root organization (the operator, where
/// unassigned agents return) has no limits. The one place limits are looked up.
pub fn effective_limits(catalogue: &Catalogue, org: &organizations::Model) -> PlanLimits {
    if org.kind == OrgKind::Root.as_str() {
        return PlanLimits::UNLIMITED;
    }
    let mut limits = catalogue.limits(&org.plan);
    if org.max_agents > 0 {
        let own = i64::from(org.max_agents);
        limits.max_agents = Some(limits.max_agents.map_or(own, |plan| plan.min(own)));
    }
    limits
}

/// The `max_organizations` of a user's account, from the live organizations `owned`:
/// the highest among their limits, and at least the free plan's (what a user owning
/// none may register); `None` (unlimited) when any of them is unlimited.
pub fn account_org_limit(catalogue: &Catalogue, owned: &[organizations::Model]) -> Option<i64> {
    let mut allowed = catalogue.free().limits.max_organizations;
    for org in owned {
        let limit = effective_limits(catalogue, org).max_organizations?;
        allowed = allowed.map(|a| a.max(limit));
    }
    allowed
}

/// What an organization uses of its plan's per-organization quotas.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Agents assigned now.
    pub agents: i64,
    /// Members, owner included.
    pub team_members: i64,
    /// The month's metered usage (`None` before any).
    pub month: Option<usage_counters::Model>,
}

impl Counts {
    /// The month's metered usage of one metric.
    pub fn used(&self, metric: fn(&usage_counters::Model) -> i64) -> i64 {
        self.month.as_ref().map_or(0, metric)
    }
}

/// Counts the organization's agents and members and reads its usage of `month`
/// (`YYYY-MM`): the one count behind GetUsage and GetSubscription.
pub async fn count_usage<C: ConnectionTrait>(db: &C, org_id: Uuid, month: &str) -> Result<Counts> {
    let agents = agent_count(db, org_id).await?;
    let team = members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_id))
        .count(db)
        .await?;
    let month = usage_counters::Entity::find_by_id((org_id, month.to_owned()))
        .one(db)
        .await?;
    Ok(Counts {
        agents: i64::try_from(agents).unwrap_or(i64::MAX),
        team_members: i64::try_from(team).unwrap_or(i64::MAX),
        month,
    })
}

/// How a quota reads in a warning ("8/10 agents", "9000/10000 logs this month").
fn label(name: &str) -> &str {
    match name {
        "team_members" => "team members",
        "logs" => "logs this month",
        other => other,
    }
}

/// The warning for a quota at or above 80 % of its limit: WARNING with the seed's
/// wording, CRITICAL at or above 100 %.
fn warning(quota: &proto::UsageQuota) -> Option<proto::UsageWarning> {
    let limit = quota.limit.filter(|l| *l > 0)?;
    let current = quota.current;
    let what = label(&quota.name);
    let (message, severity) = if current >= limit {
        (
            format!("Critical: You've reached {current}/{limit} {what}. Upgrade to add more."),
            UsageWarningSeverity::Critical,
        )
    } else if i128::from(current) * 100 >= i128::from(limit) * 80 {
        (
            format!("Warning: You're using {current}/{limit} {what}. Consider upgrading soon."),
            UsageWarningSeverity::Warning,
        )
    } else {
        return None;
    };
    Some(proto::UsageWarning {
        r#type: quota.name.clone(),
        message,
        severity: severity as i32,
    })
}

fn quota(
    name: &str,
    metric: UsageMetric,
    month: &str,
    current: i64,
    limit: Option<i64>,
) -> proto::UsageQuota {
    proto::UsageQuota {
        name: name.to_owned(),
        metric: metric as i32,
        month: month.to_owned(),
        current,
        limit,
        percentage: limit.map_or_else(String::new, |l| percentage(current, l, 1)),
    }
}

/// GetUsage: agents assigned now, team members, (for an agency) its live tenants, and
/// the current month's metered usage from `usage_counters` — only logs have a plan
/// limit; the other metrics are reported without one. A tenant or the root has no
/// `organizations` quota: only an agency owns organizations.
pub async fn get_usage(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetUsageRequest,
) -> Result<proto::GetUsageResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let db = ctx.store.db();
    let limits = effective_limits(&ctx.settings.billing.catalogue, org);
    let month = Month::of(ctx.store.now()).to_string();

    let counts = count_usage(db, org.id, &month).await?;
    let used = |f: fn(&usage_counters::Model) -> i64| counts.used(f);

    let mut quotas = vec![
        quota(
            "agents",
            UsageMetric::Unspecified,
            "",
            counts.agents,
            limits.max_agents,
        ),
        quota(
            "team_members",
            UsageMetric::Unspecified,
            "",
            counts.team_members,
            limits.max_team_members,
        ),
    ];
    if org.kind == OrgKind::Agency.as_str() {
        quotas.push(quota(
            "organizations",
            UsageMetric::Unspecified,
            "",
            organizations_count(db, org).await?,
            limits.max_organizations,
        ));
    }
    quotas.extend([
        quota(
            "logs",
            UsageMetric::Logs,
            &month,
            used(|c| c.logs),
            limits.max_logs_per_month,
        ),
        quota(
            "tokens",
            UsageMetric::Tokens,
            &month,
            used(|c| c.tokens),
            None,
        ),
        quota(
            "messages",
            UsageMetric::Messages,
            &month,
            used(|c| c.messages),
            None,
        ),
        quota(
            "conversations",
            UsageMetric::Conversations,
            &month,
            used(|c| c.conversations),
            None,
        ),
        quota(
            "minutes",
            UsageMetric::Minutes,
            &month,
            used(|c| c.minutes),
            None,
        ),
    ]);
    let warnings = quotas.iter().filter_map(warning).collect();
    Ok(proto::GetUsageResponse {
        plan_id: org.plan.clone(),
        quotas,
        warnings,
    })
}
