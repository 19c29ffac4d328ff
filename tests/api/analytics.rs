//! GetTenantAnalytics and GetAgencyAnalytics (seed 004): usage sums over a date range,
//! channel breakdown, agents, and an agency's totals and top tenants.

use chrono::{Days, NaiveDate, Utc};
use sea_orm::{ActiveModelTrait, Set};
use tenantry::{
    proto::{self, UsageMetric},
    storage::entities::agent_assignments,
};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    billing_records::{event, now, on_channel, record},
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{
        agency, agency_on, agent_uuid, create, named_on, org_uuid, register_agent, tenant, unassign,
    },
};

fn day(offset: i64) -> NaiveDate {
    let today = Utc::now().date_naive();
    if offset >= 0 {
        today.checked_add_days(Days::new(offset as u64)).unwrap()
    } else {
        today.checked_sub_days(Days::new((-offset) as u64)).unwrap()
    }
}

fn text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

async fn try_tenant(
    app: &TestApp,
    token: &str,
    org: &str,
    from: &str,
    to: &str,
) -> Result<proto::GetTenantAnalyticsResponse, Status> {
    app.billing()
        .get_tenant_analytics(authed(
            proto::GetTenantAnalyticsRequest {
                organization_id: org.into(),
                from_date: from.into(),
                to_date: to.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

/// Tenant analytics from `from` to `to` days relative to today, as the root admin.
async fn tenant_days(
    app: &TestApp,
    org: &str,
    from: i64,
    to: i64,
) -> proto::GetTenantAnalyticsResponse {
    try_tenant(app, &app.root(), org, &text(day(from)), &text(day(to)))
        .await
        .expect("tenant analytics")
}

async fn try_agency(
    app: &TestApp,
    token: &str,
    org: &str,
    from: &str,
    to: &str,
    top_limit: i32,
) -> Result<proto::GetAgencyAnalyticsResponse, Status> {
    app.billing()
        .get_agency_analytics(authed(
            proto::GetAgencyAnalyticsRequest {
                organization_id: org.into(),
                from_date: from.into(),
                to_date: to.into(),
                top_limit,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

fn money(code: &str, amount: &str) -> proto::Money {
    proto::Money {
        currency_code: code.into(),
        amount: amount.into(),
    }
}

on_both_backends!(
    tenant_analytics_sum_usage_with_a_channel_breakdown,
    agent_count_at_the_end_of_a_past_range_follows_the_assignment_history,
    agency_analytics_total_and_rank_the_agencys_live_tenants,
    agency_analytics_need_an_agency_and_its_manager,
    analytics_dates_are_validated,
);

async fn tenant_analytics_sum_usage_with_a_channel_breakdown(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Three agents: more than the free plan's one.
    let org = create(&app, &app.root(), named_on("Voice Co", "pro")).await;
    let a = register_agent(&app, &app.root(), &org.id, "Phone bot").await;
    let b = register_agent(&app, &app.root(), &org.id, "Chat bot").await;
    let idle = register_agent(&app, &app.root(), &org.id, "Idle bot").await;
    let other = tenant(&app, "Elsewhere", "").await;
    let stranger = register_agent(&app, &app.root(), &other.id, "Other bot").await;
    let at = now();
    use UsageMetric::{Conversations, Messages, Minutes, Tokens};
    let events = [
        on_channel(event("c1", &a.id, Conversations, 3, "0.30", at), "phone"),
        on_channel(event("m1", &a.id, Minutes, 12, "1.20", at), "phone"),
        on_channel(event("c2", &b.id, Conversations, 2, "0.10", at), "webchat"),
        event("c3", &b.id, Conversations, 1, "0.05", at),
        on_channel(event("s1", &a.id, Messages, 40, "0.04", at), "webchat"),
        event("t1", &b.id, Tokens, 1500, "0.45", at),
        on_channel(
            event("c4", &a.id, Conversations, 4, "0.000001", at),
            "phone",
        ),
    ];
    for e in events {
        record(&app, &org.id, e).await;
    }
    record(
        &app,
        &other.id,
        on_channel(
            event("x1", &stranger.id, Conversations, 100, "9.00", at),
            "phone",
        ),
    )
    .await;

    let stats = tenant_days(&app, &org.slug, -1, 1).await;
    assert_eq!(stats.organization_id, org.id);
    assert_eq!(stats.from_date, text(day(-1)));
    assert_eq!(stats.to_date, text(day(1)));
    assert_eq!(stats.conversations, 10);
    assert_eq!(stats.total_minutes, 12);
    assert_eq!(stats.messages, 40);
    assert_eq!(stats.tokens, 1500);
    assert_eq!(stats.total_cost, Some(money("USD", "2.140001")));
    assert_eq!(stats.agent_count, 3, "the idle agent is assigned too");
    assert_eq!(stats.active_agents, 2);
    let mut channels: Vec<(String, i64)> = stats.channel_breakdown.into_iter().collect();
    channels.sort();
    assert_eq!(
        channels,
        vec![
            ("phone".to_owned(), 7),
            ("unknown".to_owned(), 1),
            ("webchat".to_owned(), 2)
        ]
    );

    // A range before the usage has none of it, and no agent was assigned back then.
    let past = tenant_days(&app, &org.id, -5, -2).await;
    assert_eq!(
        (
            past.conversations,
            past.total_minutes,
            past.messages,
            past.tokens
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(past.total_cost, Some(money("USD", "0.00")));
    assert_eq!((past.agent_count, past.active_agents), (0, 0));
    assert!(past.channel_breakdown.is_empty());

    // The organization's own admin reads it; unassigning an agent lowers the count.
    unassign(&app, &idle.id).await;
    let own = try_tenant(
        &app,
        &app.token("CONFIG_ADMIN", &org.id),
        &org.id,
        &text(day(0)),
        &text(day(0)),
    )
    .await
    .expect("own analytics");
    assert_eq!(own.agent_count, 2);
    app.stop().await;
}

async fn agent_count_at_the_end_of_a_past_range_follows_the_assignment_history(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "History Co", "").await;
    let elsewhere = tenant(&app, "Now Elsewhere", "").await;
    let current = register_agent(&app, &app.root(), &org.id, "Current").await;
    let former = register_agent(&app, &app.root(), &elsewhere.id, "Former").await;
    // `former` worked for History Co from 10 days ago until 5 days ago (01:00 UTC).
    let at = |offset: i64| {
        day(offset)
            .and_hms_opt(1, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    };
    agent_assignments::ActiveModel {
        id: Set(Uuid::now_v7()),
        agent_id: Set(agent_uuid(&former.id)),
        organization_id: Set(org_uuid(&org.id)),
        assign_time: Set(at(-10)),
        unassign_time: Set(Some(at(-5))),
    }
    .insert(app.store.db())
    .await
    .expect("insert assignment");

    assert_eq!(tenant_days(&app, &org.id, -12, -11).await.agent_count, 0);
    assert_eq!(tenant_days(&app, &org.id, -12, -10).await.agent_count, 1);
    assert_eq!(tenant_days(&app, &org.id, -9, -6).await.agent_count, 1);
    assert_eq!(
        tenant_days(&app, &org.id, -9, -5).await.agent_count,
        0,
        "unassigned during the last day"
    );
    // A range reaching today counts the current assignment.
    assert_eq!(tenant_days(&app, &org.id, -9, 0).await.agent_count, 1);
    assert_eq!(tenant_days(&app, &org.id, -9, 3).await.agent_count, 1);
    unassign(&app, &current.id).await;
    assert_eq!(tenant_days(&app, &org.id, -1, 0).await.agent_count, 0);
    app.stop().await;
}

async fn agency_analytics_total_and_rank_the_agencys_live_tenants(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Four tenants (the team plan allows ten), Acme with two agents (pro allows ten).
    let reseller = agency_on(&app, "Reseller", "team").await;
    let rival = agency(&app, "Rival").await;
    let with_terms = |name: &str, currency: &str, rate: &str| proto::Organization {
        kind: proto::OrganizationKind::Tenant as i32,
        parent_id: reseller.id.clone(),
        currency: currency.into(),
        billing_rate_per_agent: Some(money(currency, rate)),
        ..named_on(name, "pro")
    };
    let acme = create(&app, &app.root(), with_terms("Acme Corp", "USD", "99.00")).await;
    let beta = create(&app, &app.root(), with_terms("Beta Inc", "EUR", "50.00")).await;
    let quiet = create(&app, &app.root(), with_terms("Quiet Ltd", "USD", "10.00")).await;
    let gone = create(&app, &app.root(), with_terms("Gone Ltd", "GBP", "10.00")).await;
    let rivals = tenant(&app, "Rival Client", &rival.id).await;
    let acme1 = register_agent(&app, &app.root(), &acme.id, "Acme 1").await;
    let acme2 = register_agent(&app, &app.root(), &acme.id, "Acme 2").await;
    let beta1 = register_agent(&app, &app.root(), &beta.id, "Beta 1").await;
    let rival1 = register_agent(&app, &app.root(), &rivals.id, "Rival 1").await;
    let at = now();
    use UsageMetric::{Conversations, Minutes};
    record(
        &app,
        &acme.id,
        on_channel(
            event("a1", &acme1.id, Conversations, 3, "0.60", at),
            "phone",
        ),
    )
    .await;
    record(
        &app,
        &acme.id,
        event("a2", &acme2.id, Conversations, 2, "0.40", at),
    )
    .await;
    record(
        &app,
        &acme.id,
        event("a3", &acme2.id, Minutes, 10, "0.00", at),
    )
    .await;
    record(
        &app,
        &beta.id,
        event("b1", &beta1.id, Conversations, 9, "2.50", at),
    )
    .await;
    record(
        &app,
        &beta.id,
        event("b2", &beta1.id, Minutes, 7, "0.25", at),
    )
    .await;
    record(
        &app,
        &rivals.id,
        event("r1", &rival1.id, Conversations, 500, "50.00", at),
    )
    .await;
    // Quiet Ltd is deactivated (still a tenant, not active); Gone Ltd is deleted.
    app.orgs()
        .deactivate_organization(authed(
            proto::DeactivateOrganizationRequest {
                organization_id: quiet.id.clone(),
                reason: "Non-payment".into(),
                notify_owner: false,
            },
            &app.root(),
        ))
        .await
        .expect("deactivate");
    app.orgs()
        .delete_organization(authed(
            proto::DeleteOrganizationRequest {
                organization_id: gone.id.clone(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("delete");

    let admin = app.token("AGENCY_ADMIN", &reseller.id);
    let (from, to) = (text(day(-1)), text(day(1)));
    let stats = try_agency(&app, &admin, &reseller.id, &from, &to, 0)
        .await
        .expect("agency analytics");
    assert_eq!(
        (stats.from_date.as_str(), stats.to_date.as_str()),
        (from.as_str(), to.as_str())
    );
    assert_eq!(
        stats.total_tenants, 3,
        "deleted tenants and other agencies' do not count"
    );
    assert_eq!(stats.active_tenants, 2);
    assert_eq!(stats.total_conversations, 14);
    assert_eq!(stats.total_minutes, 17);
    assert_eq!(
        stats.total_costs,
        vec![money("EUR", "2.75"), money("USD", "1.00")],
        "one entry per currency, no conversion"
    );
    assert_eq!(
        stats.total_revenues,
        vec![money("EUR", "50.00"), money("USD", "198.00")],
        "each agent's monthly rate once"
    );
    let ranking = |list: &[proto::AgencyTenantStats]| -> Vec<(String, i64, String)> {
        list.iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.conversations,
                    t.revenue.as_ref().unwrap().amount.clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        ranking(&stats.top_tenants_by_conversations),
        vec![
            ("Beta Inc".to_owned(), 9, "50.00".to_owned()),
            ("Acme Corp".to_owned(), 5, "198.00".to_owned())
        ],
        "idle tenants are not ranked"
    );
    assert_eq!(
        ranking(&stats.top_tenants_by_revenue),
        vec![
            ("Acme Corp".to_owned(), 5, "198.00".to_owned()),
            ("Beta Inc".to_owned(), 9, "50.00".to_owned())
        ]
    );
    let beta_stats = &stats.top_tenants_by_conversations[0];
    assert_eq!(beta_stats.organization_id, beta.id);
    assert_eq!(beta_stats.cost, Some(money("EUR", "2.75")));
    assert_eq!(beta_stats.revenue, Some(money("EUR", "50.00")));

    // top_limit cuts both rankings.
    let top1 = try_agency(&app, &app.root(), &reseller.slug, &from, &to, 1)
        .await
        .expect("top 1");
    assert_eq!(top1.top_tenants_by_conversations.len(), 1);
    assert_eq!(top1.top_tenants_by_conversations[0].name, "Beta Inc");
    assert_eq!(top1.top_tenants_by_revenue.len(), 1);
    assert_eq!(top1.top_tenants_by_revenue[0].name, "Acme Corp");

    // A range before the usage: tenants still counted, no usage and no ranking.
    let past = try_agency(
        &app,
        &admin,
        &reseller.id,
        &text(day(-90)),
        &text(day(-60)),
        0,
    )
    .await
    .expect("past range");
    assert_eq!((past.total_tenants, past.active_tenants), (3, 2));
    assert_eq!((past.total_conversations, past.total_minutes), (0, 0));
    assert_eq!(
        past.total_costs,
        vec![money("EUR", "0.00"), money("USD", "0.00")]
    );
    assert!(past.top_tenants_by_conversations.is_empty());
    assert!(past.top_tenants_by_revenue.is_empty());
    app.stop().await;
}

async fn agency_analytics_need_an_agency_and_its_manager(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reseller = agency(&app, "Reseller").await;
    let other = agency(&app, "Other Reseller").await;
    let client = tenant(&app, "Client", &reseller.id).await;
    let (from, to) = (text(day(-7)), text(day(0)));

    let admin = app.token("AGENCY_ADMIN", &reseller.id);
    let err = try_agency(&app, &admin, &client.id, &from, &to, 0)
        .await
        .expect_err("a tenant is not an agency");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "NOT_AN_AGENCY");
    let err = try_agency(&app, &app.root(), "internal", &from, &to, 0)
        .await
        .expect_err("the root is not an agency");
    assert_eq!(reason(&err), "NOT_AN_AGENCY");

    for token in [
        app.token("AGENCY_ADMIN", &other.id),
        app.token("CONFIG_ADMIN", &reseller.id),
        app.token("MEMBER", &reseller.id),
    ] {
        let err = try_agency(&app, &token, &reseller.id, "bad", "", 0)
            .await
            .expect_err("not a manager of the agency");
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let empty = try_agency(
        &app,
        &app.token("ROOT_POWER_USER", "internal"),
        &reseller.id,
        &from,
        &to,
        0,
    )
    .await
    .expect("operators read any agency");
    assert_eq!((empty.total_tenants, empty.active_tenants), (1, 1));
    assert!(empty.total_costs == vec![money("USD", "0.00")]);
    app.stop().await;
}

async fn analytics_dates_are_validated(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reseller = agency(&app, "Reseller").await;
    let org = tenant(&app, "Dated", &reseller.id).await;
    let root = app.root();
    let bad = |from: &'static str, to: &'static str| (from, to);
    for ((from, to), fields) in [
        (bad("", ""), vec!["from_date", "to_date"]),
        (bad("2026-1-01", "2026-02-30"), vec!["from_date", "to_date"]),
        (bad("2026-03-02", "2026-03-01"), vec!["to_date"]),
        (bad("2025-01-01", "2026-01-03"), vec!["to_date"]),
        (bad("1999-12-31", "2000-01-01"), vec!["from_date"]),
    ] {
        let err = try_tenant(&app, &root, &org.id, from, to)
            .await
            .expect_err("bad dates");
        assert_eq!(err.code(), Code::InvalidArgument, "{from}..{to}");
        assert_eq!(violations(&err), fields, "{from}..{to}");
        let err = try_agency(&app, &root, &reseller.id, from, to, 0)
            .await
            .expect_err("bad dates");
        assert_eq!(violations(&err), fields, "{from}..{to}");
    }
    // 366 days after from_date is the longest range; one day is the shortest.
    let longest = try_tenant(&app, &root, &org.id, "2025-01-01", "2026-01-02")
        .await
        .expect("366 days");
    assert_eq!(
        (longest.from_date.as_str(), longest.to_date.as_str()),
        ("2025-01-01", "2026-01-02")
    );
    try_tenant(&app, &root, &org.id, "2026-03-01", "2026-03-01")
        .await
        .expect("one day");
    let err = try_agency(&app, &root, &reseller.id, "2026-03-01", "2026-03-01", -1)
        .await
        .expect_err("negative top_limit");
    assert_eq!(violations(&err), vec!["top_limit"]);
    try_agency(&app, &root, &reseller.id, "2026-03-01", "2026-03-01", 1000)
        .await
        .expect("a large top_limit is clamped");
    app.stop().await;
}
