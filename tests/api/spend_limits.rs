//! Monthly spend limits: SetSpendLimit, GetSpendStatus, alerts exactly once per
//! threshold under concurrent recorders, and SUSPEND_USAGE overshooting by at most one
//! event.

use tenantry::proto::{self, UsageMetric as M};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{register_agent, tenant, usd},
    usage::{batch, event, record, system},
};

const RECORDERS: usize = 8;

async fn set_limit(
    app: &TestApp,
    token: &str,
    org: &str,
    limit: Option<&str>,
    thresholds: &[u32],
    action: proto::SpendLimitAction,
) -> Result<proto::SetSpendLimitResponse, tonic::Status> {
    app.billing()
        .set_spend_limit(authed(
            proto::SetSpendLimitRequest {
                organization_id: org.into(),
                monthly_spend_limit: limit.map(usd),
                billing_alerts: Some(proto::BillingAlerts {
                    alert_thresholds: thresholds.to_vec(),
                    alert_emails: vec!["billing@example.com".into()],
                    action_at_100: action as i32,
                }),
                etag: String::new(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn status(app: &TestApp, org: &str) -> proto::GetSpendStatusResponse {
    app.billing()
        .get_spend_status(authed(
            proto::GetSpendStatusRequest {
                organization_id: org.into(),
                month: String::new(),
            },
            &app.root(),
        ))
        .await
        .expect("spend status")
        .into_inner()
}

/// `RECORDERS` tasks each recording `per_task` single-event batches of `cost`; returns
/// the results' reasons.
async fn spend_concurrently(
    app: &TestApp,
    org: &str,
    agent: &str,
    per_task: usize,
    cost: &'static str,
) -> Vec<String> {
    let sys = system(app);
    let mut tasks = Vec::new();
    for t in 0..RECORDERS {
        let (app_org, agent, sys) = (org.to_owned(), agent.to_owned(), sys.clone());
        let client = app.billing();
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let mut reasons = Vec::new();
            for i in 0..per_task {
                let response = client
                    .record_usage_batch(authed(
                        proto::RecordUsageBatchRequest {
                            organization_id: app_org.clone(),
                            events: vec![event(&format!("r{t}-{i}"), &agent, M::Tokens, 10, cost)],
                        },
                        &sys,
                    ))
                    .await
                    .expect("batch")
                    .into_inner();
                reasons.push(response.results[0].reason.clone());
            }
            reasons
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("recorder"));
    }
    all
}

async fn alerts_fire_once_per_threshold_under_concurrent_recorders(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Alerted", "").await;
    let agent = register_agent(&app, &root, &org.id, "Spender").await;
    set_limit(
        &app,
        &root,
        &org.id,
        Some("10.00"),
        &[100, 50, 80],
        proto::SpendLimitAction::NotifyOnly,
    )
    .await
    .expect("set limit");
    // 8 × 25 × 0.10 = 20.00: twice the limit, all accepted (notify only).
    let reasons = spend_concurrently(&app, &org.id, &agent.id, 25, "0.10").await;
    assert!(
        reasons.iter().all(String::is_empty),
        "notify-only refuses nothing"
    );
    let s = status(&app, &org.id).await;
    assert_eq!(s.month_to_date_cost.expect("mtd").amount, "20.00");
    assert_eq!(s.thresholds_crossed, vec![50, 80, 100]);
    let fired: Vec<(u32, String)> = s
        .alerts
        .iter()
        .map(|a| {
            (
                a.threshold,
                a.month_to_date_cost.clone().expect("cost").amount,
            )
        })
        .collect();
    assert_eq!(
        fired,
        vec![
            (50, "5.00".into()),
            (80, "8.00".into()),
            (100, "10.00".into())
        ],
        "each alert records the cost right after the crossing event"
    );
    assert_eq!(s.percent_used, "200.00");
    assert!(!s.usage_suspended);
    app.stop().await;
}

async fn suspend_usage_stops_at_the_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Capped", "").await;
    let agent = register_agent(&app, &root, &org.id, "Capped Agent").await;
    set_limit(
        &app,
        &root,
        &org.id,
        Some("1.00"),
        &[50, 100],
        proto::SpendLimitAction::SuspendUsage,
    )
    .await
    .expect("set limit");
    // 8 × 10 × 0.07 = 5.60 offered against a 1.00 cap.
    let reasons = spend_concurrently(&app, &org.id, &agent.id, 10, "0.07").await;
    let accepted = reasons.iter().filter(|r| r.is_empty()).count();
    assert!(
        reasons
            .iter()
            .all(|r| r.is_empty() || r == "SPEND_LIMIT_REACHED")
    );
    // 0.07 × 15 = 1.05 ≥ 1.00 is the first total at the cap: exactly 15 accepted.
    assert_eq!(accepted, 15, "{reasons:?}");
    let s = status(&app, &org.id).await;
    assert_eq!(s.month_to_date_cost.expect("mtd").amount, "1.05");
    assert_eq!(s.thresholds_crossed, vec![50, 100]);
    assert!(s.usage_suspended);
    let err = record(
        &app,
        &system(&app),
        &org.id,
        event("late", &agent.id, M::Tokens, 1, "0.01"),
    )
    .await
    .expect_err("suspended");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "SPEND_LIMIT_REACHED");

    // Raising the limit lets usage through again.
    set_limit(
        &app,
        &root,
        &org.id,
        Some("2.00"),
        &[50, 100],
        proto::SpendLimitAction::SuspendUsage,
    )
    .await
    .expect("raise limit");
    let response = batch(
        &app,
        &system(&app),
        &org.id,
        vec![event("after", &agent.id, M::Tokens, 1, "0.01")],
    )
    .await;
    assert_eq!(response.accepted_count, 1);
    app.stop().await;
}

async fn spend_limits_are_validated_and_admin_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Guarded", "").await;
    let err = app
        .billing()
        .set_spend_limit(authed(
            proto::SetSpendLimitRequest {
                organization_id: org.id.clone(),
                monthly_spend_limit: Some(usd("0")),
                billing_alerts: Some(proto::BillingAlerts {
                    alert_thresholds: vec![0, 101],
                    alert_emails: vec!["not an email".into()],
                    action_at_100: 9,
                }),
                etag: String::new(),
            },
            &root,
        ))
        .await
        .expect_err("bad input");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "billing_alerts.action_at_100",
            "billing_alerts.alert_emails[0]",
            "billing_alerts.alert_thresholds",
            "monthly_spend_limit.amount",
        ]
    );
    let member = app.token("MEMBER", &org.id);
    let denied = set_limit(
        &app,
        &member,
        &org.id,
        Some("5.00"),
        &[80],
        proto::SpendLimitAction::NotifyOnly,
    )
    .await
    .expect_err("member");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let set = set_limit(
        &app,
        &admin,
        &org.id,
        Some("5.00"),
        &[80],
        proto::SpendLimitAction::SuspendUsage,
    )
    .await
    .expect("config admin");
    assert_eq!(set.monthly_spend_limit.expect("limit").amount, "5.00");
    let stale = app
        .billing()
        .set_spend_limit(authed(
            proto::SetSpendLimitRequest {
                organization_id: org.id.clone(),
                monthly_spend_limit: None,
                billing_alerts: None,
                etag: "\"1\"".into(),
            },
            &admin,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    let cleared = app
        .billing()
        .set_spend_limit(authed(
            proto::SetSpendLimitRequest {
                organization_id: org.id.clone(),
                monthly_spend_limit: None,
                billing_alerts: None,
                etag: set.etag.clone(),
            },
            &admin,
        ))
        .await
        .expect("clear")
        .into_inner();
    assert!(cleared.monthly_spend_limit.is_none());
    let s = status(&app, &org.id).await;
    assert!(s.monthly_spend_limit.is_none());
    assert_eq!(s.percent_used, "");
    let bad_month = app
        .billing()
        .get_spend_status(authed(
            proto::GetSpendStatusRequest {
                organization_id: org.id.clone(),
                month: "2026-13".into(),
            },
            &root,
        ))
        .await
        .expect_err("bad month");
    assert_eq!(violations(&bad_month), vec!["month".to_owned()]);
    app.stop().await;
}

on_both_backends!(
    alerts_fire_once_per_threshold_under_concurrent_recorders,
    suspend_usage_stops_at_the_limit,
    spend_limits_are_validated_and_admin_only,
);
