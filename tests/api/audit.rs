//! The audit log: entries carry actor, action, target and request id; filters and pages
//! work newest first; an agency admin reads its tenants' entries, a tenant admin does not
//! read the agency's.

use std::collections::HashSet;

use tenantry::proto::{self, AddressType};
use tonic::{Code, metadata::MetadataValue};

use crate::{
    credits::try_gift,
    helpers::{Backend, TestApp, authed, violations},
    on_both_backends,
    organizations::{mask, named_on, register_agent, usd},
};

on_both_backends!(
    the_audit_log_shows_each_mutation_of_a_scenario_in_order,
    a_mutation_is_audited_with_actor_action_and_request_id,
    audit_events_filter_and_page_newest_first,
    an_agency_admin_sees_tenant_entries_but_a_tenant_admin_not_the_agencys,
);

async fn create_org(
    app: &TestApp,
    token: &str,
    name: &str,
    kind: proto::OrganizationKind,
    parent: &str,
) -> String {
    app.orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: name.into(),
                    kind: kind as i32,
                    parent_id: parent.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("create organization")
        .into_inner()
        .organization
        .expect("organization")
        .id
}

async fn add_address(
    app: &TestApp,
    token: &str,
    org: &str,
    city: &str,
    request_id: &str,
) -> proto::Address {
    app.orgs()
        .create_address(authed(
            proto::CreateAddressRequest {
                organization_id: org.into(),
                address: Some(proto::Address {
                    r#type: AddressType::Billing as i32,
                    line1: "1 Main St".into(),
                    city: city.into(),
                    country: "GB".into(),
                    ..Default::default()
                }),
                request_id: request_id.into(),
            },
            token,
        ))
        .await
        .expect("create address")
        .into_inner()
        .address
        .expect("address")
}

async fn events(
    app: &TestApp,
    token: &str,
    org: &str,
    filter: &str,
) -> Result<Vec<proto::AuditEvent>, tonic::Status> {
    app.orgs()
        .list_audit_events(authed(
            proto::ListAuditEventsRequest {
                organization_id: org.into(),
                filter: filter.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().audit_events)
}

async fn a_mutation_is_audited_with_actor_action_and_request_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create_org(
        &app,
        &app.root(),
        "Acme",
        proto::OrganizationKind::Tenant,
        "",
    )
    .await;
    let admin = app.token_for("CONFIG_ADMIN", &org, "admin-ada", Some("ada@acme.io"));
    let created = add_address(&app, &admin, &org, "London", "req-address-1").await;

    let found = events(&app, &admin, &org, r#"request_id = "req-address-1""#)
        .await
        .expect("list");
    assert_eq!(found.len(), 1);
    let entry = &found[0];
    assert!(entry.id.starts_with("aud_"));
    assert_eq!(entry.organization_id, org);
    assert_eq!(entry.action, "CreateAddress");
    assert_eq!(entry.actor_kind, proto::ActorKind::User as i32);
    assert_eq!(entry.actor_id, "admin-ada");
    assert_eq!(entry.actor_organization_id, org);
    assert_eq!(entry.target_type, "address");
    assert_eq!(entry.target_id, created.id);
    assert!(entry.summary.contains("London"), "{}", entry.summary);
    assert!(entry.create_time.is_some());

    // Without a request id, the call's x-request-id is recorded.
    let mut request = authed(
        proto::UpdateOrganizationProfileRequest {
            organization_id: org.clone(),
            company: Some(proto::CompanyProfile {
                description: "We build agents".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
            etag: String::new(),
        },
        &admin,
    );
    let trace: MetadataValue<_> = "trace-profile-7".parse().expect("header");
    request.metadata_mut().insert("x-request-id", trace);
    app.orgs()
        .update_organization_profile(request)
        .await
        .expect("update profile");
    let traced = events(&app, &admin, &org, "request_id = trace-profile-7")
        .await
        .expect("list");
    assert_eq!(traced.len(), 1);
    assert_eq!(traced[0].action, "UpdateOrganizationProfile");

    // Secrets never reach the log: the invitation token is not in any entry.
    let invited = app
        .orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.clone(),
                email: "bo@acme.io".into(),
                role: proto::MemberRole::Member as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("invite")
        .into_inner();
    let all = events(&app, &admin, &org, "").await.expect("list all");
    assert_eq!(all[0].action, "InviteMember", "newest first");
    assert!(all.iter().all(|e| !e.summary.contains(&invited.token)));
    let by_actor = events(
        &app,
        &admin,
        &org,
        "actor_id = admin-ada AND target_type = address",
    )
    .await
    .expect("list");
    assert_eq!(by_actor.len(), 1);
    app.stop().await;
}

async fn audit_events_filter_and_page_newest_first(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create_org(
        &app,
        &app.root(),
        "Acme",
        proto::OrganizationKind::Tenant,
        "",
    )
    .await;
    let admin = app.token("CONFIG_ADMIN", &org);
    for i in 0..5 {
        add_address(&app, &admin, &org, &format!("City {i}"), "").await;
    }
    let all = events(&app, &admin, &org, "").await.expect("list");
    assert_eq!(all.len(), 6, "CreateOrganization and five CreateAddress");
    assert_eq!(
        all.last().map(|e| e.action.as_str()),
        Some("CreateOrganization")
    );

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .orgs()
            .list_audit_events(authed(
                proto::ListAuditEventsRequest {
                    organization_id: org.clone(),
                    page_size: 2,
                    page_token: token.clone(),
                    filter: "action = CreateAddress".into(),
                },
                &admin,
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.audit_events.len() <= 2);
        seen.extend(page.audit_events.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        5,
        "no entry twice"
    );
    let expected: Vec<String> = all
        .iter()
        .filter(|e| e.action == "CreateAddress")
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(seen, expected, "pages continue newest first");

    let future = events(&app, &admin, &org, "create_time >= 2999-01-01T00:00:00Z")
        .await
        .expect("list");
    assert!(future.is_empty());
    let past = events(
        &app,
        &admin,
        &org,
        r#"create_time >= "2000-01-01T00:00:00Z" AND create_time < 2999-01-01T00:00:00Z"#,
    )
    .await
    .expect("list");
    assert_eq!(past.len(), 6);
    for bad in [
        "summary = x",
        "create_time >= yesterday",
        "action >= x",
        "action = ",
    ] {
        let refused = events(&app, &admin, &org, bad)
            .await
            .expect_err("bad filter");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(violations(&refused), vec!["filter"], "{bad:?}");
    }
    let bad_token = app
        .orgs()
        .list_audit_events(authed(
            proto::ListAuditEventsRequest {
                organization_id: org.clone(),
                page_token: "garbage".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("bad token");
    assert_eq!(violations(&bad_token), vec!["page_token"]);
    let member = events(&app, &app.token("MEMBER", &org), &org, "")
        .await
        .expect_err("members cannot read the log");
    assert_eq!(member.code(), Code::PermissionDenied);
    app.stop().await;
}

async fn an_agency_admin_sees_tenant_entries_but_a_tenant_admin_not_the_agencys(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let agency = create_org(
        &app,
        &app.root(),
        "Reseller",
        proto::OrganizationKind::Agency,
        "",
    )
    .await;
    let agency_admin = app.token("AGENCY_ADMIN", &agency);
    let tenant = create_org(
        &app,
        &agency_admin,
        "Client",
        proto::OrganizationKind::Tenant,
        &agency,
    )
    .await;
    let other = create_org(
        &app,
        &app.root(),
        "Elsewhere",
        proto::OrganizationKind::Tenant,
        "",
    )
    .await;
    let tenant_admin = app.token("CONFIG_ADMIN", &tenant);
    add_address(
        &app,
        &agency_admin,
        &agency,
        "Agency City",
        "agency-address",
    )
    .await;
    add_address(
        &app,
        &tenant_admin,
        &tenant,
        "Tenant City",
        "tenant-address",
    )
    .await;
    add_address(
        &app,
        &app.token("CONFIG_ADMIN", &other),
        &other,
        "Other City",
        "other-address",
    )
    .await;

    let seen_by_agency = events(&app, &agency_admin, &agency, "")
        .await
        .expect("agency admin lists");
    let orgs: HashSet<&str> = seen_by_agency
        .iter()
        .map(|e| e.organization_id.as_str())
        .collect();
    assert_eq!(orgs, HashSet::from([agency.as_str(), tenant.as_str()]));
    assert!(
        seen_by_agency
            .iter()
            .any(|e| e.request_id == "tenant-address")
    );
    assert!(
        !seen_by_agency
            .iter()
            .any(|e| e.request_id == "other-address")
    );

    let seen_by_tenant = events(&app, &tenant_admin, &tenant, "")
        .await
        .expect("tenant admin lists");
    assert!(!seen_by_tenant.is_empty());
    assert!(seen_by_tenant.iter().all(|e| e.organization_id == tenant));
    assert!(
        !seen_by_tenant
            .iter()
            .any(|e| e.request_id == "agency-address")
    );
    let denied = events(&app, &tenant_admin, &agency, "")
        .await
        .expect_err("the agency's log");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The agency's own CONFIG_ADMIN acts on the agency alone.
    let agency_config = events(&app, &app.token("CONFIG_ADMIN", &agency), &agency, "")
        .await
        .expect("list");
    assert!(agency_config.iter().all(|e| e.organization_id == agency));
    // Operators reading an agency see its tenants too.
    let by_root = events(&app, &app.root(), &agency, "request_id = tenant-address")
        .await
        .expect("list");
    assert_eq!(by_root.len(), 1);
    app.stop().await;
}

/// `message` with a bearer credential and an `x-request-id`.
fn traced<T>(message: T, token: &str, request_id: &str) -> tonic::Request<T> {
    let mut request = authed(message, token);
    let value: MetadataValue<_> = request_id.parse().expect("header");
    request.metadata_mut().insert("x-request-id", value);
    request
}

async fn the_audit_log_shows_each_mutation_of_a_scenario_in_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let orgs = app.orgs();
    let org = orgs
        .clone()
        .create_organization(traced(
            proto::CreateOrganizationRequest {
                organization: Some(named_on("Scenario", "team")),
                request_id: "s-1".into(),
                ..Default::default()
            },
            &root,
            "s-1",
        ))
        .await
        .expect("create")
        .into_inner()
        .organization
        .expect("organization")
        .id;
    let admin = app.token_for("CONFIG_ADMIN", &org, "admin-ada", Some("ada@scenario.io"));
    orgs.clone()
        .update_organization(traced(
            proto::UpdateOrganizationRequest {
                organization: Some(proto::Organization {
                    id: org.clone(),
                    description: "agents for everyone".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["description"]),
            },
            &admin,
            "s-2",
        ))
        .await
        .expect("update");
    let invitation = orgs
        .clone()
        .invite_member(traced(
            proto::InviteMemberRequest {
                organization_id: org.clone(),
                email: "bo@scenario.io".into(),
                role: proto::MemberRole::Member as i32,
                request_id: "s-3".into(),
                ..Default::default()
            },
            &admin,
            "s-3",
        ))
        .await
        .expect("invite")
        .into_inner()
        .invitation
        .expect("invitation");
    let alpha = orgs
        .clone()
        .register_agent(traced(
            proto::RegisterAgentRequest {
                organization_id: org.clone(),
                agent: Some(proto::Agent {
                    name: "Alpha".into(),
                    ..Default::default()
                }),
                request_id: "s-4".into(),
            },
            &root,
            "s-4",
        ))
        .await
        .expect("register")
        .into_inner()
        .agent
        .expect("agent");
    // Registered at the root (not in this organization's log), then assigned here.
    let beta = register_agent(&app, &root, "", "Beta").await;
    orgs.clone()
        .assign_agent(traced(
            proto::AssignAgentRequest {
                agent_id: beta.id.clone(),
                organization_id: org.clone(),
                request_id: "s-5".into(),
            },
            &root,
            "s-5",
        ))
        .await
        .expect("assign");
    let address = add_address(&app, &admin, &org, "London", "s-6").await;
    orgs.clone()
        .deactivate_organization(traced(
            proto::DeactivateOrganizationRequest {
                organization_id: org.clone(),
                reason: "unpaid".into(),
                notify_owner: false,
            },
            &root,
            "s-7",
        ))
        .await
        .expect("deactivate");
    orgs.clone()
        .reactivate_organization(traced(
            proto::ReactivateOrganizationRequest {
                organization_id: org.clone(),
            },
            &root,
            "s-8",
        ))
        .await
        .expect("reactivate");
    app.billing()
        .set_spend_limit(traced(
            proto::SetSpendLimitRequest {
                organization_id: org.clone(),
                monthly_spend_limit: Some(usd("100.00")),
                billing_alerts: Some(proto::BillingAlerts {
                    alert_thresholds: vec![80],
                    alert_emails: vec![],
                    action_at_100: proto::SpendLimitAction::NotifyOnly as i32,
                }),
                etag: String::new(),
            },
            &admin,
            "s-9",
        ))
        .await
        .expect("spend limit");
    let gift = try_gift(&app, &root, &org, "5.00", "s-10")
        .await
        .expect("gift")
        .transaction
        .expect("transaction");

    let log = events(&app, &admin, &org, "").await.expect("list");
    let root_user = "root_admin-user";
    let expected = [
        (
            "CreateOrganization",
            root_user,
            "organization",
            org.as_str(),
        ),
        (
            "UpdateOrganization",
            "admin-ada",
            "organization",
            org.as_str(),
        ),
        (
            "InviteMember",
            "admin-ada",
            "invitation",
            invitation.id.as_str(),
        ),
        ("RegisterAgent", root_user, "agent", alpha.id.as_str()),
        ("AssignAgent", root_user, "agent", beta.id.as_str()),
        ("CreateAddress", "admin-ada", "address", address.id.as_str()),
        (
            "DeactivateOrganization",
            root_user,
            "organization",
            org.as_str(),
        ),
        (
            "ReactivateOrganization",
            root_user,
            "organization",
            org.as_str(),
        ),
        ("SetSpendLimit", "admin-ada", "organization", org.as_str()),
        (
            "GiftCredits",
            root_user,
            "credit_transaction",
            gift.id.as_str(),
        ),
    ];
    let shown: Vec<(&str, &str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor_id.as_str(),
                e.target_type.as_str(),
                e.target_id.as_str(),
            )
        })
        .collect();
    let newest_first: Vec<_> = expected.iter().rev().copied().collect();
    assert_eq!(
        shown, newest_first,
        "exactly the scenario's mutations, newest first"
    );
    let request_ids: Vec<&str> = log.iter().map(|e| e.request_id.as_str()).collect();
    let expected_ids: Vec<String> = (1..=10).rev().map(|i| format!("s-{i}")).collect();
    assert_eq!(request_ids, expected_ids);
    for entry in &log {
        assert_eq!(entry.organization_id, org);
        assert_eq!(entry.actor_kind, proto::ActorKind::User as i32, "{entry:?}");
        assert!(!entry.actor_organization_id.is_empty(), "{entry:?}");
        assert!(entry.create_time.is_some());
    }
    let times: Vec<_> = log
        .iter()
        .map(|e| e.create_time.map(|t| (t.seconds, t.nanos)))
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    app.stop().await;
}
