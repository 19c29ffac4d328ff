//! Pre-approved signups: emails and codes, uses, expiry, ValidateSignup without
//! credentials, and RegisterOrganization with closed signup.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter,
};
use tenantry::{
    proto,
    storage::entities::{organizations, pre_approved_signups},
};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
};

on_both_backends!(
    an_approved_email_validates_without_credentials_and_without_consuming,
    codes_are_checked_and_unique_among_live_approvals,
    bad_pre_approvals_name_every_field_and_write_nothing,
    validate_signup_reports_expired_and_exhausted,
    closed_signup_registration_consumes_exactly_one_use,
    an_agency_code_places_the_new_tenant_under_the_agency,
    concurrent_registrations_cannot_overspend_a_code,
    a_deleted_pre_approval_stops_working,
);

fn code_request(org: &str, code: &str, max_uses: i32) -> proto::CreatePreApprovedSignupRequest {
    proto::CreatePreApprovedSignupRequest {
        organization_id: org.into(),
        code: code.into(),
        max_uses,
        ..Default::default()
    }
}

async fn approve(
    app: &TestApp,
    credential: &str,
    request: proto::CreatePreApprovedSignupRequest,
) -> proto::PreApprovedSignup {
    app.orgs()
        .create_pre_approved_signup(authed(request, credential))
        .await
        .expect("create pre-approval")
        .into_inner()
        .signup
        .expect("signup")
}

async fn validate(
    app: &TestApp,
    email: &str,
    code: &str,
) -> Result<proto::ValidateSignupResponse, tonic::Status> {
    app.orgs()
        .validate_signup(proto::ValidateSignupRequest {
            email: email.into(),
            code: code.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn register(
    app: &TestApp,
    sub: &str,
    email: &str,
    name: &str,
    code: &str,
) -> Result<proto::Organization, tonic::Status> {
    let user = app.token_for("", "", sub, Some(email));
    app.orgs()
        .register_organization(authed(
            proto::RegisterOrganizationRequest {
                name: name.into(),
                signup_code: code.into(),
                owner_name: "Founder".into(),
                ..Default::default()
            },
            &user,
        ))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

async fn stored(app: &TestApp, id: &str) -> pre_approved_signups::Model {
    let id = tenantry::domain::ids::decode(tenantry::domain::ids::IdKind::Signup, id)
        .expect("signup id");
    pre_approved_signups::Entity::find_by_id(id)
        .one(app.store.db())
        .await
        .expect("read")
        .expect("row")
}

async fn org_count(app: &TestApp) -> u64 {
    organizations::Entity::find()
        .count(app.store.db())
        .await
        .expect("count")
}

async fn an_approved_email_validates_without_credentials_and_without_consuming(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let signup = approve(
        &app,
        &app.root(),
        proto::CreatePreApprovedSignupRequest {
            organization_id: "internal".into(),
            email: "Ada@Example.com".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(signup.id.starts_with("sgn_"));
    assert_eq!(signup.email, "ada@example.com");
    assert_eq!(signup.max_uses, 1);
    assert_eq!(signup.use_count, 0);

    let answer = validate(&app, "ADA@example.com", "")
        .await
        .expect("validate");
    assert!(answer.valid);
    assert_eq!(answer.remaining_uses, 1);
    let again = validate(&app, "ada@example.com", "")
        .await
        .expect("validate twice");
    assert!(again.valid, "validating consumes nothing");
    assert_eq!(stored(&app, &signup.id).await.use_count, 0);

    let unknown = validate(&app, "bo@example.com", "")
        .await
        .expect("validate unknown");
    assert!(!unknown.valid);
    assert_eq!(unknown.reason, "NOT_APPROVED");
    assert_eq!(unknown.remaining_uses, 0);
    let neither = validate(&app, "", "")
        .await
        .expect_err("neither email nor code");
    assert_eq!(neither.code(), Code::InvalidArgument);
    assert_eq!(violations(&neither), vec!["email", "code"]);
    let both = validate(&app, "ada@example.com", "BETA-1")
        .await
        .expect_err("both");
    assert_eq!(both.code(), Code::InvalidArgument);
    let bad_email = validate(&app, "nope", "").await.expect_err("bad email");
    assert_eq!(violations(&bad_email), vec!["email"]);
    app.stop().await;
}

async fn codes_are_checked_and_unique_among_live_approvals(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let signup = approve(&app, &root, code_request("internal", "BETA_2026-x", 3)).await;
    assert_eq!(signup.code, "BETA_2026-x");
    assert_eq!(signup.max_uses, 3);
    let taken = app
        .orgs()
        .create_pre_approved_signup(authed(code_request("internal", "BETA_2026-x", 1), &root))
        .await
        .expect_err("code taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(reason(&taken), "SIGNUP_CODE_TAKEN");
    let answer = validate(&app, "", "BETA_2026-x")
        .await
        .expect("validate code");
    assert!(answer.valid);
    assert_eq!(answer.remaining_uses, 3);
    let other_case = validate(&app, "", "beta_2026-x")
        .await
        .expect("codes are exact");
    assert_eq!(other_case.reason, "NOT_APPROVED");

    // Idempotent creation: the same request id returns the first result and writes once.
    let mut request = code_request("internal", "ONCE", 1);
    request.request_id = "create-once".into();
    let first = approve(&app, &root, request.clone()).await;
    let retry = approve(&app, &root, request).await;
    assert_eq!(first.id, retry.id);
    let count = pre_approved_signups::Entity::find()
        .filter(pre_approved_signups::Column::Code.eq("ONCE"))
        .count(app.store.db())
        .await
        .expect("count");
    assert_eq!(count, 1);
    app.stop().await;
}

async fn bad_pre_approvals_name_every_field_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let create = |request: proto::CreatePreApprovedSignupRequest| {
        let request = authed(request, &root);
        let mut client = app.orgs();
        async move {
            client
                .create_pre_approved_signup(request)
                .await
                .expect_err("bad input")
        }
    };
    let past = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - 60,
        nanos: 0,
    };
    let all_bad = create(proto::CreatePreApprovedSignupRequest {
        organization_id: "internal".into(),
        email: "a@example.com".into(),
        code: "BETA".into(),
        max_uses: 100_001,
        expire_time: Some(past),
        ..Default::default()
    })
    .await;
    assert_eq!(all_bad.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&all_bad),
        vec!["email", "code", "max_uses", "expire_time"]
    );
    for code in ["abc", "has space", "x".repeat(65).as_str(), "ünïcode"] {
        let bad = create(code_request("internal", code, 1)).await;
        assert_eq!(violations(&bad), vec!["code"], "{code:?}");
    }
    let negative = create(code_request("internal", "GOOD", -1)).await;
    assert_eq!(violations(&negative), vec!["max_uses"]);
    let neither = create(proto::CreatePreApprovedSignupRequest {
        organization_id: "internal".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(violations(&neither), vec!["email", "code"]);
    let member = app
        .orgs()
        .create_pre_approved_signup(authed(
            code_request("internal", "GOOD", 1),
            &app.token("MEMBER", "internal"),
        ))
        .await
        .expect_err("members cannot approve");
    assert_eq!(member.code(), Code::PermissionDenied);
    assert_eq!(
        pre_approved_signups::Entity::find()
            .count(app.store.db())
            .await
            .expect("count"),
        0
    );
    app.stop().await;
}

async fn validate_signup_reports_expired_and_exhausted(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.closed_signup = true).await else {
        return;
    };
    let root = app.root();
    let future = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    let mut request = code_request("internal", "SOON-GONE", 5);
    request.expire_time = Some(future);
    let expiring = approve(&app, &root, request).await;
    assert_eq!(expiring.expire_time, Some(future));
    // Move the expiry into the past in storage (the API refuses past expiries).
    let mut row = stored(&app, &expiring.id).await.into_active_model();
    row.expire_time = Set(Some(chrono::Utc::now().timestamp_micros() - 1_000_000));
    row.update(app.store.db()).await.expect("expire");
    let expired = validate(&app, "", "SOON-GONE").await.expect("validate");
    assert!(!expired.valid);
    assert_eq!(expired.reason, "EXPIRED");
    let refused = register(&app, "u-exp", "exp@example.com", "Expired Co", "SOON-GONE")
        .await
        .expect_err("expired code");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "SIGNUP_NOT_APPROVED");

    let single = approve(&app, &root, code_request("internal", "SINGLE", 0)).await;
    assert_eq!(single.max_uses, 1, "max_uses defaults to one");
    register(&app, "u-one", "one@example.com", "One Co", "SINGLE")
        .await
        .expect("first use");
    let exhausted = validate(&app, "", "SINGLE").await.expect("validate");
    assert!(!exhausted.valid);
    assert_eq!(exhausted.reason, "EXHAUSTED");
    assert_eq!(exhausted.remaining_uses, 0);
    let orgs_before = org_count(&app).await;
    let refused = register(&app, "u-two", "two@example.com", "Two Co", "SINGLE")
        .await
        .expect_err("exhausted code");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "SIGNUP_NOT_APPROVED");
    assert_eq!(org_count(&app).await, orgs_before);
    assert_eq!(stored(&app, &single.id).await.use_count, 1);
    app.stop().await;
}

async fn closed_signup_registration_consumes_exactly_one_use(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.closed_signup = true).await else {
        return;
    };
    let root = app.root();
    let orgs_before = org_count(&app).await;
    let unapproved = register(&app, "u-0", "zero@example.com", "Zero Co", "")
        .await
        .expect_err("not approved");
    assert_eq!(unapproved.code(), Code::FailedPrecondition);
    assert_eq!(reason(&unapproved), "SIGNUP_NOT_APPROVED");
    assert_eq!(org_count(&app).await, orgs_before);

    let multi = approve(&app, &root, code_request("internal", "MULTI-2", 2)).await;
    let first = register(&app, "u-1", "one@example.com", "One Co", "MULTI-2")
        .await
        .expect("first");
    assert!(
        first.parent_id.is_empty(),
        "a root code makes a self-managed tenant"
    );
    assert_eq!(stored(&app, &multi.id).await.use_count, 1);
    assert_eq!(
        validate(&app, "", "MULTI-2")
            .await
            .expect("validate")
            .remaining_uses,
        1
    );
    register(&app, "u-2", "two@example.com", "Two Co", "MULTI-2")
        .await
        .expect("second");
    assert_eq!(stored(&app, &multi.id).await.use_count, 2);
    let third = register(&app, "u-3", "three@example.com", "Three Co", "MULTI-2")
        .await
        .expect_err("exhausted");
    assert_eq!(reason(&third), "SIGNUP_NOT_APPROVED");
    assert_eq!(stored(&app, &multi.id).await.use_count, 2);

    let email = approve(
        &app,
        &root,
        proto::CreatePreApprovedSignupRequest {
            organization_id: "internal".into(),
            email: "vip@example.com".into(),
            ..Default::default()
        },
    )
    .await;
    register(&app, "u-vip", "VIP@example.com", "Vip Co", "")
        .await
        .expect("approved email");
    assert_eq!(stored(&app, &email.id).await.use_count, 1);
    assert_eq!(org_count(&app).await, orgs_before + 3);
    app.stop().await;
}

async fn an_agency_code_places_the_new_tenant_under_the_agency(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.closed_signup = true).await else {
        return;
    };
    let agency = app
        .orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: "Reseller".into(),
                    kind: proto::OrganizationKind::Agency as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create agency")
        .into_inner()
        .organization
        .expect("agency");
    let agency_admin = app.token("AGENCY_ADMIN", &agency.id);
    let code = approve(
        &app,
        &agency_admin,
        code_request(&agency.id, "RESELLER-1", 1),
    )
    .await;
    assert_eq!(code.organization_id, agency.id);
    let tenant = register(
        &app,
        "u-client",
        "client@example.com",
        "Client Co",
        "RESELLER-1",
    )
    .await
    .expect("register");
    assert_eq!(tenant.parent_id, agency.id);
    assert_eq!(tenant.kind, proto::OrganizationKind::Tenant as i32);
    assert_eq!(stored(&app, &code.id).await.use_count, 1);
    let listed = app
        .orgs()
        .list_pre_approved_signups(authed(
            proto::ListPreApprovedSignupsRequest {
                organization_id: agency.id.clone(),
                ..Default::default()
            },
            &agency_admin,
        ))
        .await
        .expect("list")
        .into_inner()
        .signups;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].use_count, 1);
    app.stop().await;
}

async fn concurrent_registrations_cannot_overspend_a_code(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.closed_signup = true).await else {
        return;
    };
    let code = approve(&app, &app.root(), code_request("internal", "RACE-2", 2)).await;
    let attempts: Vec<_> = (0..6)
        .map(|i| {
            let user = app.token_for(
                "",
                "",
                &format!("racer-{i}"),
                Some(&format!("racer{i}@example.com")),
            );
            let request = authed(
                proto::RegisterOrganizationRequest {
                    name: format!("Racer {i}"),
                    signup_code: "RACE-2".into(),
                    ..Default::default()
                },
                &user,
            );
            let mut client = app.orgs();
            tokio::spawn(async move { client.register_organization(request).await })
        })
        .collect();
    let mut registered = 0;
    for attempt in attempts {
        match attempt.await.expect("join") {
            Ok(_) => registered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(
                    ["SIGNUP_NOT_APPROVED", "SIGNUP_EXHAUSTED"].contains(&reason(&status).as_str()),
                    "{status:?}"
                );
            }
        }
    }
    assert_eq!(registered, 2);
    assert_eq!(stored(&app, &code.id).await.use_count, 2);
    let racers = organizations::Entity::find()
        .filter(organizations::Column::Name.starts_with("Racer"))
        .count(app.store.db())
        .await
        .expect("count");
    assert_eq!(racers, 2);
    app.stop().await;
}

async fn a_deleted_pre_approval_stops_working(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let code = approve(&app, &root, code_request("internal", "DOOMED", 1)).await;
    let keep = approve(&app, &root, code_request("internal", "KEPT", 1)).await;
    let delete = |signup_id: &str| {
        let request = authed(
            proto::DeletePreApprovedSignupRequest {
                organization_id: "internal".into(),
                signup_id: signup_id.into(),
            },
            &root,
        );
        let mut client = app.orgs();
        async move { client.delete_pre_approved_signup(request).await }
    };
    delete(&code.id).await.expect("delete");
    assert!(
        stored(&app, &code.id).await.delete_time.is_some(),
        "soft delete"
    );
    assert_eq!(
        validate(&app, "", "DOOMED").await.expect("validate").reason,
        "NOT_APPROVED"
    );
    let again = delete(&code.id).await.expect_err("already deleted");
    assert_eq!(again.code(), Code::NotFound);
    let bad = delete("org_01h455vb4pex5vsknk084sn02q")
        .await
        .expect_err("bad id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad), vec!["signup_id"]);
    let listed = app
        .orgs()
        .list_pre_approved_signups(authed(
            proto::ListPreApprovedSignupsRequest {
                organization_id: "internal".into(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .expect("list")
        .into_inner()
        .signups;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec![keep.id.as_str()]
    );
    // A deleted code may be issued again.
    approve(&app, &root, code_request("internal", "DOOMED", 1)).await;
    app.stop().await;
}
