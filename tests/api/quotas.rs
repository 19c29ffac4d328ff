//! GetUsage (seed 003): current value, limit and percentage per quota against the plan's
//! limits, and warnings at 80 % (the seed's wording) and 100 %.

use tenantry::proto::{self, UsageMetric, UsageWarningSeverity};
use tonic::Code;

use crate::{
    billing_records::{event, month_of, now, record},
    helpers::{Backend, TestApp, authed},
    on_both_backends,
    organizations::{create, named, register_agent},
};

async fn usage(app: &TestApp, token: &str, org: &str) -> proto::GetUsageResponse {
    app.billing()
        .get_usage(authed(
            proto::GetUsageRequest {
                organization_id: org.into(),
            },
            token,
        ))
        .await
        .expect("get usage")
        .into_inner()
}

fn quota<'a>(response: &'a proto::GetUsageResponse, name: &str) -> &'a proto::UsageQuota {
    response
        .quotas
        .iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("quota {name} in {response:?}"))
}

/// (type, message, severity) of every warning.
fn warnings(response: &proto::GetUsageResponse) -> Vec<(String, String, i32)> {
    response
        .warnings
        .iter()
        .map(|w| (w.r#type.clone(), w.message.clone(), w.severity))
        .collect()
}

/// An organization on `plan` created by the root admin, with an agent limit of its own.
async fn on_plan(app: &TestApp, name: &str, plan: &str, max_agents: i32) -> proto::Organization {
    create(
        app,
        &app.root(),
        proto::Organization {
            plan: plan.into(),
            usage_limits: Some(proto::UsageLimits {
                max_agents,
                ..Default::default()
            }),
            ..named(name)
        },
    )
    .await
}

async fn agents(app: &TestApp, org: &proto::Organization, n: usize) -> Vec<proto::Agent> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(register_agent(app, &app.root(), &org.id, &format!("Agent {i}")).await);
    }
    out
}

on_both_backends!(
    usage_reports_counts_limits_and_percentages,
    agents_warn_at_80_percent_with_the_seed_wording_and_turn_critical_at_100,
    the_organizations_own_agent_limit_caps_the_plans,
    monthly_logs_and_team_members_warn_against_their_limits,
    an_agency_counts_its_live_tenants_against_max_organizations,
);

async fn usage_reports_counts_limits_and_percentages(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = on_plan(&app, "Seed Three", "pro", 0).await;
    let list = agents(&app, &org, 5).await;
    let at = now();
    record(
        &app,
        &org.id,
        event("logs", &list[0].id, UsageMetric::Logs, 12_450, "0", at),
    )
    .await;
    record(
        &app,
        &org.id,
        event("tok", &list[1].id, UsageMetric::Tokens, 777, "0.01", at),
    )
    .await;
    record(
        &app,
        &org.id,
        event("msg", &list[1].id, UsageMetric::Messages, 12, "0", at),
    )
    .await;
    record(
        &app,
        &org.id,
        event("conv", &list[2].id, UsageMetric::Conversations, 3, "0", at),
    )
    .await;
    record(
        &app,
        &org.id,
        event("min", &list[2].id, UsageMetric::Minutes, 41, "0", at),
    )
    .await;

    // Members of the organization read it too, as does its API key's role.
    let response = usage(&app, &app.token("MEMBER", &org.id), &org.id).await;
    assert_eq!(response.plan_id, "pro");
    let names: Vec<&str> = response.quotas.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "agents",
            "team_members",
            "logs",
            "tokens",
            "messages",
            "conversations",
            "minutes"
        ],
        "a tenant has no organizations quota"
    );
    let agents_quota = quota(&response, "agents");
    assert_eq!(agents_quota.current, 5);
    assert_eq!(agents_quota.limit, Some(10));
    assert_eq!(agents_quota.percentage, "50.0");
    assert_eq!(agents_quota.metric, UsageMetric::Unspecified as i32);
    assert_eq!(agents_quota.month, "");
    let members = quota(&response, "team_members");
    assert_eq!((members.current, members.limit), (0, Some(5)));
    assert_eq!(members.percentage, "0.0");
    let logs = quota(&response, "logs");
    assert_eq!(logs.current, 12_450);
    assert_eq!(logs.limit, Some(50_000));
    assert_eq!(logs.percentage, "24.9", "the seed's example");
    assert_eq!(logs.metric, UsageMetric::Logs as i32);
    assert_eq!(logs.month, month_of(at));
    for (name, metric, current) in [
        ("tokens", UsageMetric::Tokens, 777),
        ("messages", UsageMetric::Messages, 12),
        ("conversations", UsageMetric::Conversations, 3),
        ("minutes", UsageMetric::Minutes, 41),
    ] {
        let q = quota(&response, name);
        assert_eq!(q.current, current, "{name}");
        assert_eq!(q.metric, metric as i32, "{name}");
        assert_eq!(q.limit, None, "{name} is unlimited");
        assert_eq!(q.percentage, "", "{name}");
        assert_eq!(q.month, month_of(at));
    }
    assert!(response.warnings.is_empty(), "{:?}", response.warnings);

    // Unassigning an agent lowers the count at once.
    crate::organizations::unassign(&app, &list[4].id).await;
    let response = usage(&app, &app.root(), &org.slug).await;
    assert_eq!(quota(&response, "agents").current, 4);
    assert_eq!(quota(&response, "agents").percentage, "40.0");
    app.stop().await;
}

async fn agents_warn_at_80_percent_with_the_seed_wording_and_turn_critical_at_100(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = on_plan(&app, "Growing Team", "pro", 0).await;
    agents(&app, &org, 7).await;
    let response = usage(&app, &app.root(), &org.id).await;
    assert_eq!(quota(&response, "agents").percentage, "70.0");
    assert!(response.warnings.is_empty(), "70 % is below the threshold");

    agents(&app, &org, 1).await;
    let response = usage(&app, &app.root(), &org.id).await;
    assert_eq!(quota(&response, "agents").percentage, "80.0");
    assert_eq!(
        warnings(&response),
        vec![(
            "agents".to_owned(),
            "Warning: You're using 8/10 agents. Consider upgrading soon.".to_owned(),
            UsageWarningSeverity::Warning as i32
        )]
    );

    agents(&app, &org, 2).await;
    let response = usage(&app, &app.root(), &org.id).await;
    assert_eq!(quota(&response, "agents").percentage, "100.0");
    assert_eq!(
        warnings(&response),
        vec![(
            "agents".to_owned(),
            "Critical: You've reached 10/10 agents. Upgrade to add more.".to_owned(),
            UsageWarningSeverity::Critical as i32
        )]
    );
    app.stop().await;
}

async fn the_organizations_own_agent_limit_caps_the_plans(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // pro allows 10; the organization's own limit of 5 is smaller and wins.
    let capped = on_plan(&app, "Capped", "pro", 5).await;
    agents(&app, &capped, 4).await;
    let response = usage(&app, &app.root(), &capped.id).await;
    let q = quota(&response, "agents");
    assert_eq!((q.current, q.limit), (4, Some(5)));
    assert_eq!(q.percentage, "80.0");
    assert_eq!(
        warnings(&response),
        vec![(
            "agents".to_owned(),
            "Warning: You're using 4/5 agents. Consider upgrading soon.".to_owned(),
            UsageWarningSeverity::Warning as i32
        )]
    );

    // basic allows 3; an own limit of 20 does not raise it.
    let small = on_plan(&app, "Small Plan", "basic", 20).await;
    agents(&app, &small, 1).await;
    let response = usage(&app, &app.root(), &small.id).await;
    let q = quota(&response, "agents");
    assert_eq!((q.current, q.limit), (1, Some(3)));
    assert_eq!(q.percentage, "33.3");
    assert_eq!(quota(&response, "logs").limit, Some(10_000));
    assert_eq!(quota(&response, "team_members").limit, Some(3));

    // enterprise has no agent limit unless the organization sets one.
    let big = on_plan(&app, "Big Plan", "enterprise", 0).await;
    let response = usage(&app, &app.root(), &big.id).await;
    assert_eq!(quota(&response, "agents").limit, None);
    assert_eq!(quota(&response, "agents").percentage, "");
    assert_eq!(quota(&response, "logs").limit, None);
    let big = on_plan(&app, "Big Capped", "enterprise", 2).await;
    agents(&app, &big, 2).await;
    let response = usage(&app, &app.root(), &big.id).await;
    assert_eq!(quota(&response, "agents").limit, Some(2));
    assert_eq!(
        warnings(&response),
        vec![(
            "agents".to_owned(),
            "Critical: You've reached 2/2 agents. Upgrade to add more.".to_owned(),
            UsageWarningSeverity::Critical as i32
        )]
    );
    app.stop().await;
}

async fn monthly_logs_and_team_members_warn_against_their_limits(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // A registered organization is on the free plan (1 member, 1,000 logs a month) and
    // its owner is its one member.
    let owner = app.token_for("", "", "solo-owner", Some("solo@example.com"));
    let org = app
        .orgs()
        .register_organization(authed(
            proto::RegisterOrganizationRequest {
                name: "Solo Shop".into(),
                owner_name: "Sam Solo".into(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("register")
        .into_inner()
        .organization
        .expect("organization");
    let agent = register_agent(&app, &app.root(), &org.id, "Logger").await;
    let at = now();
    record(
        &app,
        &org.id,
        event("l-1", &agent.id, UsageMetric::Logs, 800, "0", at),
    )
    .await;
    let admin = app.token_for(
        "CONFIG_ADMIN",
        &org.id,
        "solo-owner",
        Some("solo@example.com"),
    );
    let response = usage(&app, &admin, &org.id).await;
    assert_eq!(response.plan_id, "free");
    assert_eq!(quota(&response, "logs").percentage, "80.0");
    assert_eq!(quota(&response, "team_members").current, 1);
    assert_eq!(
        warnings(&response),
        vec![
            (
                "agents".to_owned(),
                "Critical: You've reached 1/1 agents. Upgrade to add more.".to_owned(),
                UsageWarningSeverity::Critical as i32
            ),
            (
                "team_members".to_owned(),
                "Critical: You've reached 1/1 team members. Upgrade to add more.".to_owned(),
                UsageWarningSeverity::Critical as i32
            ),
            (
                "logs".to_owned(),
                "Warning: You're using 800/1000 logs this month. Consider upgrading soon."
                    .to_owned(),
                UsageWarningSeverity::Warning as i32
            ),
        ]
    );

    // Logs are refused past the limit (plan_limits), so a month reaches 100 % exactly.
    record(
        &app,
        &org.id,
        event("l-2", &agent.id, UsageMetric::Logs, 200, "0", at),
    )
    .await;
    let response = usage(&app, &admin, &org.id).await;
    let logs = quota(&response, "logs");
    assert_eq!((logs.current, logs.percentage.as_str()), (1000, "100.0"));
    let logs_warning = response
        .warnings
        .iter()
        .find(|w| w.r#type == "logs")
        .expect("logs warning");
    assert_eq!(
        logs_warning.message,
        "Critical: You've reached 1000/1000 logs this month. Upgrade to add more."
    );
    assert_eq!(logs_warning.severity, UsageWarningSeverity::Critical as i32);
    app.stop().await;
}

async fn an_agency_counts_its_live_tenants_against_max_organizations(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let agency = create(
        &app,
        &app.root(),
        proto::Organization {
            kind: proto::OrganizationKind::Agency as i32,
            plan: "pro".into(),
            ..named("Reseller")
        },
    )
    .await;
    let mut tenants = Vec::new();
    for name in ["Client One", "Client Two", "Client Three"] {
        tenants.push(crate::organizations::tenant(&app, name, &agency.id).await);
    }
    let admin = app.token("AGENCY_ADMIN", &agency.id);
    let response = usage(&app, &admin, &agency.id).await;
    let names: Vec<&str> = response.quotas.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(&names[..3], &["agents", "team_members", "organizations"]);
    let orgs = quota(&response, "organizations");
    assert_eq!((orgs.current, orgs.limit), (3, Some(3)));
    assert_eq!(orgs.percentage, "100.0");
    assert_eq!(
        warnings(&response),
        vec![(
            "organizations".to_owned(),
            "Critical: You've reached 3/3 organizations. Upgrade to add more.".to_owned(),
            UsageWarningSeverity::Critical as i32
        )]
    );

    // A deleted tenant no longer counts.
    app.orgs()
        .delete_organization(authed(
            proto::DeleteOrganizationRequest {
                organization_id: tenants[2].id.clone(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("delete tenant");
    let response = usage(&app, &admin, &agency.id).await;
    let orgs = quota(&response, "organizations");
    assert_eq!((orgs.current, orgs.percentage.as_str()), (2, "66.7"));
    assert!(response.warnings.is_empty(), "{:?}", response.warnings);

    // The agency's admin reads a tenant's usage; a tenant has no organizations quota.
    let tenant = usage(&app, &admin, &tenants[0].id).await;
    assert!(tenant.quotas.iter().all(|q| q.name != "organizations"));
    // Another organization's admin may not.
    let err = app
        .billing()
        .get_usage(authed(
            proto::GetUsageRequest {
                organization_id: agency.id.clone(),
            },
            &app.token("CONFIG_ADMIN", &tenants[1].id),
        ))
        .await
        .expect_err("foreign org");
    assert_eq!(err.code(), Code::PermissionDenied);
    app.stop().await;
}
