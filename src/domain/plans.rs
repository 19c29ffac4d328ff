//! Built-in plan limits: what each plan id allows. The subscription issue turns this into
//! a configurable catalogue with prices and feature flags; until then these defaults are
//! the limits `GetUsage` reports.

/// Limits of a plan; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Agents assigned at once.
    pub max_agents: Option<i64>,
    /// LOGS usage per month.
    pub max_logs_per_month: Option<i64>,
    /// Days logs are kept.
    pub log_retention_days: Option<i64>,
    /// Members of the organization.
    pub max_team_members: Option<i64>,
    /// Organizations an account (agency) may have.
    pub max_organizations: Option<i64>,
}

/// The built-in limits of a plan id (unknown ids get the free plan's).
pub fn builtin_limits(plan: &str) -> PlanLimits {
    let l = |agents, logs, retention, members, orgs| PlanLimits {
        max_agents: Some(agents),
        max_logs_per_month: Some(logs),
        log_retention_days: Some(retention),
        max_team_members: Some(members),
        max_organizations: Some(orgs),
    };
    match plan {
        "basic" => l(3, 10_000, 14, 3, 1),
        "pro" => l(10, 50_000, 30, 5, 3),
        "team" => l(25, 200_000, 90, 20, 10),
        "business" => l(50, 1_000_000, 180, 50, 50),
        "enterprise" => PlanLimits {
            max_agents: None,
            max_logs_per_month: None,
            log_retention_days: Some(365),
            max_team_members: None,
            max_organizations: None,
        },
        _ => l(1, 1_000, 7, 1, 1),
    }
}
