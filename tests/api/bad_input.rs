//! Bad input: INVALID_ARGUMENT with a field violation for every bad field, reported at
//! once, and nothing written.

use std::collections::BTreeSet;

use tenantry::{
    proto,
    storage::entities::{
        agent_assignments, agents, audit_entries, idempotency_records, organizations,
    },
};
use tonic::{Code, Status};

use crate::{
    helpers::{Backend, TestApp, authed, violations},
    on_both_backends,
    organizations::{create, mask, named, named_on, org_row, register_agent, rows, usd},
};

/// Row counts of every table a request of this suite could write.
async fn snapshot(app: &TestApp) -> [u64; 5] {
    [
        rows::<organizations::Entity>(app).await,
        rows::<agents::Entity>(app).await,
        rows::<agent_assignments::Entity>(app).await,
        rows::<audit_entries::Entity>(app).await,
        rows::<idempotency_records::Entity>(app).await,
    ]
}

fn assert_invalid(status: &Status, fields: &[&str], case: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    let got: BTreeSet<String> = violations(status).into_iter().collect();
    let want: BTreeSet<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    assert_eq!(got, want, "{case}");
}

fn rate(amount: &str) -> proto::Organization {
    proto::Organization {
        billing_rate_per_agent: Some(usd(amount)),
        ..named("Rated")
    }
}

on_both_backends!(
    create_rejects_each_bad_field_and_writes_nothing,
    create_reports_several_bad_fields_at_once,
    lists_reject_bad_tokens_filters_and_orders,
    update_rejects_bad_values_and_writes_nothing,
    agent_requests_reject_bad_values_and_write_nothing,
);

async fn create_rejects_each_bad_field_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let rate_field = "organization.billing_rate_per_agent.amount";
    let cases: Vec<(&str, proto::CreateOrganizationRequest, &str)> = vec![
        ("empty name", org(named("")), "organization.name"),
        ("blank name", org(named("   ")), "organization.name"),
        (
            "101-char name",
            org(named(&"n".repeat(101))),
            "organization.name",
        ),
        (
            "control character",
            org(named("Acme\u{0}Corp")),
            "organization.name",
        ),
        (
            "uppercase slug",
            org(proto::Organization {
                slug: "Acme".into(),
                ..named("Acme")
            }),
            "organization.slug",
        ),
        (
            "double hyphen",
            org(proto::Organization {
                slug: "a--b".into(),
                ..named("Acme")
            }),
            "organization.slug",
        ),
        (
            "64-char slug",
            org(proto::Organization {
                slug: "a".repeat(64),
                ..named("Acme")
            }),
            "organization.slug",
        ),
        (
            "contact email",
            org(proto::Organization {
                contact_email: "not-an-email".into(),
                ..named("Acme")
            }),
            "organization.contact_email",
        ),
        ("negative rate", org(rate("-1.00")), rate_field),
        ("over-precise rate", org(rate("1.001")), rate_field),
        ("exponent", org(rate("1e3")), rate_field),
        ("NaN", org(rate("NaN")), rate_field),
        ("empty amount", org(rate("")), rate_field),
        ("huge rate", org(rate("10000000000000")), rate_field),
        (
            "rate currency",
            org(proto::Organization {
                billing_rate_per_agent: Some(proto::Money {
                    currency_code: "EUR".into(),
                    amount: "1.00".into(),
                }),
                ..named("Acme")
            }),
            "organization.billing_rate_per_agent.currency_code",
        ),
        (
            "unknown currency",
            org(proto::Organization {
                currency: "XYZ".into(),
                ..named("Acme")
            }),
            "organization.currency",
        ),
        (
            "kind ROOT",
            org(proto::Organization {
                kind: proto::OrganizationKind::Root as i32,
                ..named("Acme")
            }),
            "organization.kind",
        ),
        (
            "unknown kind",
            org(proto::Organization {
                kind: 42,
                ..named("Acme")
            }),
            "organization.kind",
        ),
        (
            "1001-char description",
            org(proto::Organization {
                description: "d".repeat(1001),
                ..named("Acme")
            }),
            "organization.description",
        ),
        (
            "unknown plan",
            org(proto::Organization {
                plan: "platinum".into(),
                ..named("Acme")
            }),
            "organization.plan",
        ),
        (
            "negative max agents",
            org(proto::Organization {
                usage_limits: Some(proto::UsageLimits {
                    max_agents: -1,
                    ..Default::default()
                }),
                ..named("Acme")
            }),
            "organization.usage_limits.max_agents",
        ),
        (
            "alert threshold",
            org(proto::Organization {
                billing_alerts: Some(proto::BillingAlerts {
                    alert_thresholds: vec![50, 150],
                    ..Default::default()
                }),
                ..named("Acme")
            }),
            "organization.billing_alerts.alert_thresholds",
        ),
        (
            "owner email",
            proto::CreateOrganizationRequest {
                owner: Some(proto::OwnerInvite {
                    email: "nobody".into(),
                    ..Default::default()
                }),
                ..org(named("Acme"))
            },
            "owner.email",
        ),
        (
            "request id",
            proto::CreateOrganizationRequest {
                request_id: "r".repeat(200),
                ..org(named("Acme"))
            },
            "request_id",
        ),
    ];
    let before = snapshot(&app).await;
    for (case, request, field) in cases {
        let status = app
            .orgs()
            .create_organization(authed(request, &root))
            .await
            .expect_err(case);
        assert_invalid(&status, &[field], case);
        assert!(!status.message().is_empty(), "{case}");
    }
    assert_eq!(snapshot(&app).await, before, "bad input wrote something");
    // The boundaries themselves are accepted.
    let boundary = proto::Organization {
        slug: "a".repeat(63),
        description: "d".repeat(1000),
        billing_rate_per_agent: Some(proto::Money {
            currency_code: "NGN".into(),
            amount: "0.01".into(),
        }),
        currency: "NGN".into(),
        ..named(&"n".repeat(100))
    };
    let created = create(&app, &root, boundary).await;
    assert_eq!(created.slug.len(), 63);
    assert_eq!(
        created.billing_rate_per_agent.map(|m| m.amount).as_deref(),
        Some("0.01")
    );
    app.stop().await;
}

fn org(organization: proto::Organization) -> proto::CreateOrganizationRequest {
    proto::CreateOrganizationRequest {
        organization: Some(organization),
        ..Default::default()
    }
}

async fn create_reports_several_bad_fields_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let before = snapshot(&app).await;
    let request = org(proto::Organization {
        name: String::new(),
        slug: "Bad Slug".into(),
        kind: proto::OrganizationKind::Root as i32,
        contact_email: "x@".into(),
        description: "d".repeat(1001),
        currency: "XYZ".into(),
        billing_rate_per_agent: Some(usd("1.001")),
        ..Default::default()
    });
    let status = app
        .orgs()
        .create_organization(authed(request, &app.root()))
        .await
        .expect_err("bad");
    assert_invalid(
        &status,
        &[
            "organization.name",
            "organization.slug",
            "organization.kind",
            "organization.contact_email",
            "organization.description",
            "organization.currency",
            "organization.billing_rate_per_agent.amount",
        ],
        "all at once",
    );
    assert_eq!(snapshot(&app).await, before);
    app.stop().await;
}

async fn lists_reject_bad_tokens_filters_and_orders(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // Three agents: more than the free plan's one.
    let acme = create(&app, &root, named_on("Acme Corp", "pro")).await;
    let list = |filter: &str, order_by: &str, page_token: &str, page_size: i32| {
        proto::ListOrganizationsRequest {
            filter: filter.into(),
            order_by: order_by.into(),
            page_token: page_token.into(),
            page_size,
        }
    };
    let cases = [
        (
            "garbage token",
            list("", "", "garbage!!", 0),
            vec!["page_token"],
        ),
        (
            "base64 junk token",
            list("", "", "eyJ4IjoxfQ", 0),
            vec!["page_token"],
        ),
        ("negative size", list("", "", "", -1), vec!["page_size"]),
        ("unknown field", list("nope = 1", "", "", 0), vec!["filter"]),
        (
            "bad status",
            list("status = BOGUS", "", "", 0),
            vec!["filter"],
        ),
        ("bad kind", list("kind = PLANET", "", "", 0), vec!["filter"]),
        (
            "bad parent",
            list("parent_id = acme", "", "", 0),
            vec!["filter"],
        ),
        ("missing value", list("status =", "", "", 0), vec!["filter"]),
        (
            "OR",
            list("status = ACTIVE OR kind = AGENCY", "", "", 0),
            vec!["filter"],
        ),
        (
            "injection",
            list("status = 'x'; DROP TABLE organizations", "", "", 0),
            vec!["filter"],
        ),
        ("unknown order", list("", "slug", "", 0), vec!["order_by"]),
        (
            "bad direction",
            list("", "name sideways", "", 0),
            vec!["order_by"],
        ),
        (
            "all at once",
            list("nope = 1", "slug", "garbage!!", -5),
            vec!["filter", "order_by", "page_token", "page_size"],
        ),
    ];
    for (case, request, fields) in cases {
        let status = app
            .orgs()
            .list_organizations(authed(request, &root))
            .await
            .expect_err(case);
        assert_invalid(&status, &fields, case);
    }
    let agents = |filter: &str, page_token: &str| proto::ListAgentsRequest {
        organization_id: acme.id.clone(),
        filter: filter.into(),
        page_token: page_token.into(),
        page_size: 0,
    };
    for (case, request, field) in [
        ("garbage token", agents("", "garbage!!"), "page_token"),
        ("bad status", agents("status = ASLEEP", ""), "filter"),
        ("unknown field", agents("name = x", ""), "filter"),
    ] {
        let status = app
            .orgs()
            .list_agents(authed(request, &root))
            .await
            .expect_err(case);
        assert_invalid(&status, &[field], case);
    }
    // A page token of one organization's agent list is refused for another's.
    for i in 0..3 {
        register_agent(&app, &root, &acme.id, &format!("Bot {i}")).await;
    }
    let first = app
        .orgs()
        .list_agents(authed(
            proto::ListAgentsRequest {
                page_size: 1,
                ..agents("", "")
            },
            &root,
        ))
        .await
        .expect("first page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let request = proto::ListAgentsRequest {
        organization_id: "internal".into(),
        page_token: first.next_page_token,
        page_size: 1,
        filter: String::new(),
    };
    let status = app
        .orgs()
        .list_agents(authed(request, &root))
        .await
        .expect_err("foreign token");
    assert_invalid(&status, &["page_token"], "foreign token");
    app.stop().await;
}

async fn update_rejects_bad_values_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let before = snapshot(&app).await;
    let change =
        |organization: proto::Organization, paths: &[&str]| proto::UpdateOrganizationRequest {
            organization: Some(proto::Organization {
                id: acme.id.clone(),
                ..organization
            }),
            update_mask: mask(paths),
        };
    let cases = [
        (
            "empty name",
            change(named(""), &["name"]),
            vec!["organization.name"],
        ),
        (
            "long name",
            change(named(&"n".repeat(101)), &["name"]),
            vec!["organization.name"],
        ),
        (
            "rate",
            change(rate("1.001"), &["billing_rate_per_agent"]),
            vec!["organization.billing_rate_per_agent.amount"],
        ),
        (
            "negative rate",
            change(rate("-1.00"), &["billing_rate_per_agent"]),
            vec!["organization.billing_rate_per_agent.amount"],
        ),
        (
            "currency",
            change(
                proto::Organization {
                    currency: "XYZ".into(),
                    ..named("x")
                },
                &["currency"],
            ),
            vec!["organization.currency"],
        ),
        (
            "email and description",
            change(
                proto::Organization {
                    contact_email: "nope".into(),
                    description: "d".repeat(1001),
                    ..named("")
                },
                &["contact_email", "description", "name"],
            ),
            vec![
                "organization.contact_email",
                "organization.description",
                "organization.name",
            ],
        ),
        ("slug", change(named("x"), &["slug"]), vec!["update_mask"]),
    ];
    for (case, request, fields) in cases {
        let status = app
            .orgs()
            .update_organization(authed(request, &root))
            .await
            .expect_err(case);
        assert_invalid(&status, &fields, case);
    }
    assert_eq!(snapshot(&app).await, before);
    let row = org_row(&app, &acme.id).await;
    assert_eq!(
        (row.name.as_str(), row.billing_rate_micros, row.version),
        ("Acme Corp", 0, 1)
    );
    let long_reason = proto::SetOrganizationActiveRequest {
        organization_id: acme.id.clone(),
        active: false,
        reason: "r".repeat(501),
    };
    let status = app
        .orgs()
        .set_organization_active(authed(long_reason, &root))
        .await
        .expect_err("long reason");
    assert_invalid(&status, &["reason"], "long reason");
    assert_eq!(org_row(&app, &acme.id).await.status, "ACTIVE");
    app.stop().await;
}

async fn agent_requests_reject_bad_values_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let agent = register_agent(&app, &root, &acme.id, "Bot").await;
    let before = snapshot(&app).await;
    let register = |name: &str, amount: Option<&str>| proto::RegisterAgentRequest {
        organization_id: acme.id.clone(),
        agent: Some(proto::Agent {
            name: name.into(),
            billing_rate: amount.map(usd),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases = [
        ("empty name", register("", None), vec!["agent.name"]),
        (
            "long name",
            register(&"n".repeat(101), None),
            vec!["agent.name"],
        ),
        (
            "negative rate",
            register("Bot", Some("-1.00")),
            vec!["agent.billing_rate.amount"],
        ),
        (
            "both",
            register(" ", Some("1.001")),
            vec!["agent.name", "agent.billing_rate.amount"],
        ),
    ];
    for (case, request, fields) in cases {
        let status = app
            .orgs()
            .register_agent(authed(request, &root))
            .await
            .expect_err(case);
        assert_invalid(&status, &fields, case);
    }
    let update = |agent_in: proto::Agent, paths: &[&str]| proto::UpdateAgentRequest {
        agent: Some(proto::Agent {
            id: agent.id.clone(),
            ..agent_in
        }),
        update_mask: mask(paths),
    };
    let cases = [
        (
            "exponent rate",
            update(
                proto::Agent {
                    billing_rate: Some(usd("1e3")),
                    ..Default::default()
                },
                &["billing_rate"],
            ),
            vec!["agent.billing_rate.amount"],
        ),
        (
            "empty name",
            update(proto::Agent::default(), &["name"]),
            vec!["agent.name"],
        ),
        (
            "unknown path",
            update(proto::Agent::default(), &["organization_id"]),
            vec!["update_mask"],
        ),
        (
            "empty mask",
            update(proto::Agent::default(), &[]),
            vec!["update_mask"],
        ),
    ];
    for (case, request, fields) in cases {
        let status = app
            .orgs()
            .update_agent(authed(request, &root))
            .await
            .expect_err(case);
        assert_invalid(&status, &fields, case);
    }
    assert_eq!(snapshot(&app).await, before);
    let row = crate::organizations::agent_row(&app, &agent.id).await;
    assert_eq!(
        (row.name.as_str(), row.billing_rate_micros, row.version),
        ("Bot", None, 1)
    );
    app.stop().await;
}
