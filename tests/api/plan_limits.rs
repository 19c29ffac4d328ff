//! Plan limits enforced where they apply (issue 4): agents on register and assign,
//! members on invite and accept, organizations per agency and per registering user,
//! LOGS per month on usage; the plan is not changed through UpdateOrganization.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter,
};
use tenantry::{
    domain::{clock::FixedClock, plans::Catalogue},
    proto::{self, MemberRole, UsageEventStatus as S, UsageMetric as M},
    storage::entities::{agents, invitations, members, organizations, usage_counters},
};
use tonic::{Code, Status};

use crate::{
    billing_records::event as event_at,
    helpers::{Backend, TestApp, authed, metadata, reason, violations},
    on_both_backends,
    organizations::{
        create, mask, named, org_row, org_uuid, own_connection, register_agent, try_create,
    },
    usage::{batch, event, record, system},
};

on_both_backends!(
    agents_block_at_exactly_the_plan_limit,
    concurrent_assigns_fill_exactly_the_room_left,
    members_block_at_the_limit_counting_pending_invitations,
    accepting_past_a_downgraded_limit_is_refused,
    an_agency_blocks_new_tenants_at_max_organizations,
    registration_blocks_at_the_users_organization_limit,
    logs_block_at_exactly_the_monthly_limit,
    each_month_has_its_own_logs_allowance,
    concurrent_recorders_accept_exactly_the_logs_limit,
    the_plan_is_not_updated_through_update_organization,
    plans_are_checked_against_the_configured_catalogue,
);

/// Asserts a RESOURCE_EXHAUSTED `PLAN_LIMIT_REACHED` for `limit` with its numbers.
fn assert_limit(status: &Status, limit: &str, current: i64, allowed: i64) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(status), "PLAN_LIMIT_REACHED", "{status:?}");
    assert_eq!(
        metadata(status, "limit").as_deref(),
        Some(limit),
        "{status:?}"
    );
    assert_eq!(
        metadata(status, "current"),
        Some(current.to_string()),
        "{status:?}"
    );
    assert_eq!(
        metadata(status, "allowed"),
        Some(allowed.to_string()),
        "{status:?}"
    );
}

/// A tenant on `plan` created by the root admin (an operator's comped plan).
async fn on_plan(app: &TestApp, name: &str, plan: &str) -> proto::Organization {
    create(
        app,
        &app.root(),
        proto::Organization {
            plan: plan.into(),
            ..named(name)
        },
    )
    .await
}

/// Puts an organization on `plan` the way the subscription service does (the row's
/// plan mirrors the subscription): a fixture for a plan change made elsewhere.
async fn set_plan(app: &TestApp, org_id: &str, plan: &str) {
    let mut row = org_row(app, org_id).await.into_active_model();
    row.plan = Set(plan.to_owned());
    row.update(app.store.db()).await.expect("set plan");
}

async fn try_register_agent(app: &TestApp, org_id: &str, name: &str) -> Result<(), Status> {
    let request = proto::RegisterAgentRequest {
        organization_id: org_id.into(),
        agent: Some(proto::Agent {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    app.orgs()
        .register_agent(authed(request, &app.root()))
        .await
        .map(|_| ())
}

async fn try_assign(app: &TestApp, agent_id: &str, org_id: &str) -> Result<(), Status> {
    let request = proto::AssignAgentRequest {
        agent_id: agent_id.into(),
        organization_id: org_id.into(),
        request_id: String::new(),
    };
    app.orgs()
        .assign_agent(authed(request, &app.root()))
        .await
        .map(|_| ())
}

async fn agents_in(app: &TestApp, org_id: &str) -> u64 {
    agents::Entity::find()
        .filter(agents::Column::OrganizationId.eq(org_uuid(org_id)))
        .count(app.store.db())
        .await
        .expect("count agents")
}

async fn agents_block_at_exactly_the_plan_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // Free: one agent.
    let free = on_plan(&app, "Free Shop", "free").await;
    register_agent(&app, &root, &free.id, "Only").await;
    let refused = try_register_agent(&app, &free.id, "Second")
        .await
        .expect_err("free allows one agent");
    assert_limit(&refused, "max_agents", 1, 1);
    assert_eq!(metadata(&refused, "plan").as_deref(), Some("free"));
    assert_eq!(agents_in(&app, &free.id).await, 1);

    // Basic: three, by registration or by assignment; a refused move leaves the agent
    // where it was.
    let basic = on_plan(&app, "Basic Shop", "basic").await;
    register_agent(&app, &root, &basic.id, "One").await;
    let two = register_agent(&app, &root, "", "Two").await;
    try_assign(&app, &two.id, &basic.id)
        .await
        .expect("second fits");
    register_agent(&app, &root, &basic.id, "Three").await;
    let spare = register_agent(&app, &root, "", "Spare").await;
    let refused = try_assign(&app, &spare.id, &basic.id)
        .await
        .expect_err("a fourth does not fit");
    assert_limit(&refused, "max_agents", 3, 3);
    let refused = try_register_agent(&app, &basic.id, "Four")
        .await
        .expect_err("nor registered");
    assert_limit(&refused, "max_agents", 3, 3);
    assert_eq!(agents_in(&app, &basic.id).await, 3);
    let internal = organizations::Entity::find()
        .filter(organizations::Column::Slug.eq("internal"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("root organization");
    let spare_row = agents::Entity::find()
        .filter(agents::Column::Name.eq("Spare"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("spare");
    assert_eq!(spare_row.organization_id, internal.id, "the spare stayed");

    // Moving one out makes room for the spare.
    crate::organizations::unassign(&app, &two.id).await;
    try_assign(&app, &spare.id, &basic.id)
        .await
        .expect("room again");
    assert_eq!(agents_in(&app, &basic.id).await, 3);

    // The organization's own, smaller agent limit caps the plan's.
    let capped = create(
        &app,
        &root,
        proto::Organization {
            plan: "basic".into(),
            usage_limits: Some(proto::UsageLimits {
                max_agents: 2,
                ..Default::default()
            }),
            ..named("Capped Shop")
        },
    )
    .await;
    register_agent(&app, &root, &capped.id, "A").await;
    register_agent(&app, &root, &capped.id, "B").await;
    let refused = try_register_agent(&app, &capped.id, "C")
        .await
        .expect_err("own cap");
    assert_limit(&refused, "max_agents", 2, 2);

    // A downgrade elsewhere leaves agents in place but blocks new ones.
    set_plan(&app, &basic.id, "free").await;
    let refused = try_register_agent(&app, &basic.id, "Five")
        .await
        .expect_err("over the free limit");
    assert_limit(&refused, "max_agents", 3, 1);

    // The root organization has no limit.
    for i in 0..3 {
        register_agent(&app, &root, "", &format!("Pool {i}")).await;
    }
    app.stop().await;
}

async fn concurrent_assigns_fill_exactly_the_room_left(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let basic = on_plan(&app, "Busy Shop", "basic").await;
    let mut spares = Vec::new();
    for i in 0..8 {
        spares.push(register_agent(&app, &root, "", &format!("Spare {i}")).await);
    }
    let tasks: Vec<_> = spares
        .iter()
        .map(|spare| {
            let mut client = own_connection(&app);
            let request = authed(
                proto::AssignAgentRequest {
                    agent_id: spare.id.clone(),
                    organization_id: basic.id.clone(),
                    request_id: String::new(),
                },
                &root,
            );
            tokio::spawn(async move { client.assign_agent(request).await.map(|_| ()) })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(()) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "PLAN_LIMIT_REACHED", "{status:?}");
            }
        }
    }
    assert_eq!(admitted, 3);
    assert_eq!(agents_in(&app, &basic.id).await, 3, "the limit was overrun");
    app.stop().await;
}

async fn invite(
    app: &TestApp,
    admin: &str,
    org: &str,
    email: &str,
) -> Result<proto::InviteMemberResponse, Status> {
    app.orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.into(),
                email: email.into(),
                role: MemberRole::Member as i32,
                name: "Invitee".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn accept(app: &TestApp, sub: &str, email: &str, token: &str) -> Result<(), Status> {
    let user = app.token_for("", "", sub, Some(email));
    app.orgs()
        .accept_invitation(authed(
            proto::AcceptInvitationRequest {
                token: token.into(),
                name: String::new(),
            },
            &user,
        ))
        .await
        .map(|_| ())
}

async fn member_count(app: &TestApp, org: &str) -> u64 {
    members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_uuid(org)))
        .count(app.store.db())
        .await
        .expect("count members")
}

/// A basic-plan tenant created by the root admin with an owner invitation, accepted:
/// (org id, the owner's admin token).
async fn basic_with_owner(app: &TestApp, name: &str) -> (String, String) {
    let created = app
        .orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    plan: "basic".into(),
                    ..named(name)
                }),
                owner: Some(proto::OwnerInvite {
                    email: "owner@team.io".into(),
                    first_name: "Olu".into(),
                    last_name: "Owner".into(),
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create")
        .into_inner();
    let org = created.organization.expect("organization").id;
    accept(
        app,
        "owner-user",
        "owner@team.io",
        &created.owner_invitation_token,
    )
    .await
    .expect("owner accepts");
    let admin = app.token_for("CONFIG_ADMIN", &org, "owner-user", Some("owner@team.io"));
    (org, admin)
}

async fn members_block_at_the_limit_counting_pending_invitations(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Basic: three members, owner included; pending invitations hold their seats.
    let (org, admin) = basic_with_owner(&app, "Team Shop").await;
    assert_eq!(member_count(&app, &org).await, 1);
    let ada = invite(&app, &admin, &org, "ada@team.io")
        .await
        .expect("second seat");
    let bo = invite(&app, &admin, &org, "bo@team.io")
        .await
        .expect("third seat");
    let refused = invite(&app, &admin, &org, "cy@team.io")
        .await
        .expect_err("no fourth seat");
    assert_limit(&refused, "max_team_members", 3, 3);
    assert_eq!(metadata(&refused, "members").as_deref(), Some("1"));
    assert_eq!(
        metadata(&refused, "pending_invitations").as_deref(),
        Some("2")
    );
    let cy_rows = invitations::Entity::find()
        .filter(invitations::Column::Email.eq("cy@team.io"))
        .count(app.store.db())
        .await
        .expect("count");
    assert_eq!(cy_rows, 0, "a refused invitation writes nothing");

    // Re-inviting a pending email replaces its invitation: not counted twice.
    let again = invite(&app, &admin, &org, "ada@team.io")
        .await
        .expect("re-invite");
    assert_ne!(again.token, ada.token);
    let ada = again;
    // A revoked invitation frees its seat.
    app.orgs()
        .revoke_invitation(authed(
            proto::RevokeInvitationRequest {
                organization_id: org.clone(),
                invitation_id: bo.invitation.expect("invitation").id,
            },
            &admin,
        ))
        .await
        .expect("revoke");
    let cy = invite(&app, &admin, &org, "cy@team.io")
        .await
        .expect("the revoked seat");
    // An expired invitation frees its seat too.
    let cy_id = tenantry::domain::ids::decode(
        tenantry::domain::ids::IdKind::Invitation,
        &cy.invitation.expect("invitation").id,
    )
    .expect("invitation id");
    let mut row = invitations::Entity::find_by_id(cy_id)
        .one(app.store.db())
        .await
        .expect("read")
        .expect("row")
        .into_active_model();
    row.expire_time = Set(0);
    row.update(app.store.db()).await.expect("expire");
    invite(&app, &admin, &org, "di@team.io")
        .await
        .expect("the expired seat");
    accept(&app, "ada-user", "ada@team.io", &ada.token)
        .await
        .expect("ada joins");
    assert_eq!(member_count(&app, &org).await, 2);
    let refused = invite(&app, &admin, &org, "ed@team.io")
        .await
        .expect_err("two members and one pending");
    assert_limit(&refused, "max_team_members", 3, 3);

    // Free: one member. A tenant without an owner can invite one person, no more.
    let free = on_plan(&app, "Solo Shop", "free").await;
    let solo_admin = app.token("CONFIG_ADMIN", &free.id);
    invite(&app, &solo_admin, &free.id, "first@solo.io")
        .await
        .expect("the one seat");
    let refused = invite(&app, &solo_admin, &free.id, "second@solo.io")
        .await
        .expect_err("free has one seat");
    assert_limit(&refused, "max_team_members", 1, 1);

    // The root organization has no limit.
    let root_admin = app.root();
    for i in 0..3 {
        invite(&app, &root_admin, "internal", &format!("staff{i}@ops.io"))
            .await
            .expect("root invites");
    }
    app.stop().await;
}

async fn accepting_past_a_downgraded_limit_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (org, admin) = basic_with_owner(&app, "Shrinking Shop").await;
    let ada = invite(&app, &admin, &org, "ada@team.io")
        .await
        .expect("invite");
    // The plan drops to free (one member) before Ada accepts.
    set_plan(&app, &org, "free").await;
    let refused = accept(&app, "ada-user", "ada@team.io", &ada.token)
        .await
        .expect_err("no seat left");
    assert_limit(&refused, "max_team_members", 1, 1);
    assert_eq!(member_count(&app, &org).await, 1);
    let stored = invitations::Entity::find()
        .filter(invitations::Column::Email.eq("ada@team.io"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("invitation");
    assert_eq!(stored.status, "PENDING", "the refusal changed nothing");
    // Back on basic, the same invitation is accepted.
    set_plan(&app, &org, "basic").await;
    accept(&app, "ada-user", "ada@team.io", &ada.token)
        .await
        .expect("accepted after the upgrade");
    assert_eq!(member_count(&app, &org).await, 2);
    app.stop().await;
}

async fn tenant_under(
    app: &TestApp,
    token: &str,
    agency: &str,
    name: &str,
) -> Result<proto::Organization, Status> {
    try_create(
        app,
        token,
        proto::Organization {
            kind: proto::OrganizationKind::Tenant as i32,
            parent_id: agency.into(),
            ..named(name)
        },
    )
    .await
}

async fn an_agency_blocks_new_tenants_at_max_organizations(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let agency = create(
        &app,
        &root,
        proto::Organization {
            kind: proto::OrganizationKind::Agency as i32,
            plan: "pro".into(),
            ..named("Reseller")
        },
    )
    .await;
    let agency_admin = app.token("AGENCY_ADMIN", &agency.id);
    let mut tenants = Vec::new();
    for name in ["Client One", "Client Two", "Client Three"] {
        tenants.push(
            tenant_under(&app, &agency_admin, &agency.id, name)
                .await
                .expect("pro allows three"),
        );
    }
    let refused = tenant_under(&app, &agency_admin, &agency.id, "Client Four")
        .await
        .expect_err("a fourth");
    assert_limit(&refused, "max_organizations", 3, 3);
    assert_eq!(metadata(&refused, "plan").as_deref(), Some("pro"));
    // The limit is the agency's plan: operators creating under it are bound too.
    let refused = tenant_under(&app, &root, &agency.id, "Client Four")
        .await
        .expect_err("an operator too");
    assert_limit(&refused, "max_organizations", 3, 3);
    let fours = organizations::Entity::find()
        .filter(organizations::Column::Name.eq("Client Four"))
        .count(app.store.db())
        .await
        .expect("count");
    assert_eq!(fours, 0);
    // Self-managed tenants and agencies under the root are not the agency's.
    crate::organizations::tenant(&app, "Independent", "").await;
    // A deleted tenant frees its place.
    app.orgs()
        .delete_organization(authed(
            proto::DeleteOrganizationRequest {
                organization_id: tenants[2].id.clone(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .expect("delete");
    tenant_under(&app, &agency_admin, &agency.id, "Client Four")
        .await
        .expect("room again");

    // A free agency has one tenant.
    let small = crate::organizations::agency(&app, "Small Reseller").await;
    assert_eq!(small.plan, "free");
    tenant_under(&app, &root, &small.id, "Small One")
        .await
        .expect("one");
    let refused = tenant_under(&app, &root, &small.id, "Small Two")
        .await
        .expect_err("free allows one");
    assert_limit(&refused, "max_organizations", 1, 1);
    app.stop().await;
}

/// RegisterOrganization as user `sub` (email `sub@example.com`); the new org's id.
pub(crate) async fn register(
    app: &TestApp,
    sub: &str,
    name: &str,
    code: &str,
) -> Result<String, Status> {
    let user = app.token_for("", "", sub, Some(&format!("{sub}@example.com")));
    app.orgs()
        .register_organization(authed(
            proto::RegisterOrganizationRequest {
                name: name.into(),
                owner_name: "Founder".into(),
                signup_code: code.into(),
                ..Default::default()
            },
            &user,
        ))
        .await
        .map(|r| r.into_inner().organization.expect("organization").id)
}

async fn registration_blocks_at_the_users_organization_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // On the free plan a user owns one organization.
    let first = register(&app, "founder", "First Co", "")
        .await
        .expect("first");
    let refused = register(&app, "founder", "Second Co", "")
        .await
        .expect_err("free allows one");
    assert_limit(&refused, "max_organizations", 1, 1);
    // Another user is not affected.
    register(&app, "someone-else", "Other Co", "")
        .await
        .expect("another user");
    // The highest plan among the user's organizations sets the account's limit: pro
    // allows three.
    set_plan(&app, &first, "pro").await;
    register(&app, "founder", "Second Co", "")
        .await
        .expect("second");
    register(&app, "founder", "Third Co", "")
        .await
        .expect("third");
    let refused = register(&app, "founder", "Fourth Co", "")
        .await
        .expect_err("pro allows three");
    assert_limit(&refused, "max_organizations", 3, 3);
    assert_eq!(metadata(&refused, "plan").as_deref(), Some("pro"));
    let owned = organizations::Entity::find()
        .filter(organizations::Column::OwnerUserId.eq("founder"))
        .count(app.store.db())
        .await
        .expect("count");
    assert_eq!(owned, 3);
    // An unlimited plan lifts the limit.
    set_plan(&app, &first, "enterprise").await;
    register(&app, "founder", "Fourth Co", "")
        .await
        .expect("enterprise is unlimited");

    // A signup code of an agency at its limit cannot place another tenant under it.
    let agency = crate::organizations::agency(&app, "Reseller").await;
    let agency_admin = app.token("AGENCY_ADMIN", &agency.id);
    app.orgs()
        .create_pre_approved_signup(authed(
            proto::CreatePreApprovedSignupRequest {
                organization_id: agency.id.clone(),
                code: "RESELLER-5".into(),
                max_uses: 5,
                ..Default::default()
            },
            &agency_admin,
        ))
        .await
        .expect("code");
    register(&app, "client-1", "Client One", "RESELLER-5")
        .await
        .expect("the free agency's one tenant");
    let refused = register(&app, "client-2", "Client Two", "RESELLER-5")
        .await
        .expect_err("the agency is full");
    assert_limit(&refused, "max_organizations", 1, 1);
    app.stop().await;
}

async fn logs_counter(app: &TestApp, org: &str, month: &str) -> i64 {
    usage_counters::Entity::find_by_id((org_uuid(org), month.to_owned()))
        .one(app.store.db())
        .await
        .expect("read counters")
        .map_or(0, |c| c.logs)
}

fn this_month() -> String {
    Utc::now().format("%Y-%m").to_string()
}

async fn logs_block_at_exactly_the_monthly_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = on_plan(&app, "Chatty Shop", "free").await;
    let agent = register_agent(&app, &app.root(), &org.id, "Logger").await;
    let sys = system(&app);
    record(
        &app,
        &sys,
        &org.id,
        event("l-1", &agent.id, M::Logs, 999, "0"),
    )
    .await
    .expect("999 of 1000");
    // Per event in a batch: the 1000th log fits, the 1001st does not, other metrics
    // have no plan limit, and an event too big for the room left is refused whole.
    let response = batch(
        &app,
        &sys,
        &org.id,
        vec![
            event("l-2", &agent.id, M::Logs, 1, "0"),
            event("l-3", &agent.id, M::Logs, 1, "0"),
            event("t-1", &agent.id, M::Tokens, 5_000, "0.01"),
            event("l-1", &agent.id, M::Logs, 999, "0"),
            event("l-4", &agent.id, M::Logs, 0, "0"),
        ],
    )
    .await;
    let statuses: Vec<(i32, &str)> = response
        .results
        .iter()
        .map(|r| (r.status, r.reason.as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (S::Accepted as i32, ""),
            (S::Refused as i32, "PLAN_LIMIT_REACHED"),
            (S::Accepted as i32, ""),
            (S::Duplicate as i32, ""),
            (S::Accepted as i32, ""),
        ]
    );
    assert_eq!(
        (
            response.accepted_count,
            response.duplicate_count,
            response.refused_count
        ),
        (3, 1, 1)
    );
    assert_eq!(logs_counter(&app, &org.id, &this_month()).await, 1000);
    // The unary call answers RESOURCE_EXHAUSTED with the numbers.
    let refused = record(
        &app,
        &sys,
        &org.id,
        event("l-5", &agent.id, M::Logs, 1, "0"),
    )
    .await
    .expect_err("over the limit");
    assert_limit(&refused, "max_logs_per_month", 1000, 1000);
    assert_eq!(metadata(&refused, "month"), Some(this_month()));
    assert_eq!(metadata(&refused, "requested").as_deref(), Some("1"));
    assert_eq!(logs_counter(&app, &org.id, &this_month()).await, 1000);

    // Basic allows 10,000: one event of 10,001 is refused, 10,000 fits.
    let basic = on_plan(&app, "Basic Logger", "basic").await;
    let agent = register_agent(&app, &app.root(), &basic.id, "Logger").await;
    let refused = record(
        &app,
        &sys,
        &basic.id,
        event("b-1", &agent.id, M::Logs, 10_001, "0"),
    )
    .await
    .expect_err("too big");
    assert_limit(&refused, "max_logs_per_month", 0, 10_000);
    record(
        &app,
        &sys,
        &basic.id,
        event("b-2", &agent.id, M::Logs, 10_000, "0"),
    )
    .await
    .expect("exactly the limit");
    assert_eq!(logs_counter(&app, &basic.id, &this_month()).await, 10_000);
    app.stop().await;
}

async fn each_month_has_its_own_logs_allowance(backend: Backend) {
    let clock = Arc::new(FixedClock::new(
        Utc.with_ymd_and_hms(2026, 2, 10, 12, 0, 0).unwrap(),
    ));
    let Some(app) = TestApp::spawn_with_clock(backend, clock.clone(), |_| {}).await else {
        return;
    };
    let org = on_plan(&app, "Monthly Shop", "free").await;
    let agent = register_agent(&app, &app.root(), &org.id, "Logger").await;
    let sys = system(&app);
    let february = Utc.with_ymd_and_hms(2026, 2, 20, 9, 0, 0).unwrap();
    let march = Utc.with_ymd_and_hms(2026, 3, 5, 9, 0, 0).unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 3, 6, 0, 0, 0).unwrap());
    let response = batch(
        &app,
        &sys,
        &org.id,
        vec![
            event_at("f-1", &agent.id, M::Logs, 1000, "0", february),
            event_at("m-1", &agent.id, M::Logs, 1000, "0", march),
            event_at("f-2", &agent.id, M::Logs, 1, "0", february),
            event_at("m-2", &agent.id, M::Logs, 1, "0", march),
        ],
    )
    .await;
    let statuses: Vec<i32> = response.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![
            S::Accepted as i32,
            S::Accepted as i32,
            S::Refused as i32,
            S::Refused as i32
        ]
    );
    assert_eq!(logs_counter(&app, &org.id, "2026-02").await, 1000);
    assert_eq!(logs_counter(&app, &org.id, "2026-03").await, 1000);
    app.stop().await;
}

async fn concurrent_recorders_accept_exactly_the_logs_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = on_plan(&app, "Racing Logs", "free").await;
    let agent = register_agent(&app, &app.root(), &org.id, "Logger").await;
    let sys = system(&app);
    // Eight recorders of 200 logs each against 1,000: exactly five fit.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let channel = tonic::transport::Channel::from_shared(format!(
                "http://127.0.0.1:{}",
                app.grpc_port
            ))
            .expect("endpoint")
            .connect_lazy();
            let mut client = proto::billing_service_client::BillingServiceClient::new(channel);
            let request = authed(
                proto::RecordUsageRequest {
                    organization_id: org.id.clone(),
                    event: Some(event(&format!("race-{i}"), &agent.id, M::Logs, 200, "0")),
                },
                &sys,
            );
            tokio::spawn(async move { client.record_usage(request).await.map(|_| ()) })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(()) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "PLAN_LIMIT_REACHED", "{status:?}");
            }
        }
    }
    assert_eq!(accepted, 5);
    assert_eq!(logs_counter(&app, &org.id, &this_month()).await, 1000);
    app.stop().await;
}

async fn update_plan(
    app: &TestApp,
    token: &str,
    organization: proto::Organization,
    paths: &[&str],
) -> Result<proto::Organization, Status> {
    app.orgs()
        .update_organization(authed(
            proto::UpdateOrganizationRequest {
                organization: Some(organization),
                update_mask: mask(paths),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

async fn the_plan_is_not_updated_through_update_organization(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = on_plan(&app, "Steady Shop", "basic").await;
    let refused = update_plan(
        &app,
        &root,
        proto::Organization {
            id: org.id.clone(),
            plan: "pro".into(),
            ..Default::default()
        },
        &["plan"],
    )
    .await
    .expect_err("plan via update");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), vec!["organization.plan"]);
    assert!(refused.message().contains("ChangePlan"), "{refused:?}");
    // Reported with the other bad fields at once, and nothing is written.
    let refused = update_plan(
        &app,
        &root,
        proto::Organization {
            id: org.id.clone(),
            name: String::new(),
            plan: "pro".into(),
            ..Default::default()
        },
        &["name", "plan"],
    )
    .await
    .expect_err("two bad fields");
    assert_eq!(
        violations(&refused),
        vec!["organization.name", "organization.plan"]
    );
    let row = org_row(&app, &org.id).await;
    assert_eq!((row.plan.as_str(), row.version), ("basic", 1));
    // The current plan in a full-object update changes nothing and is accepted.
    let updated = update_plan(
        &app,
        &root,
        proto::Organization {
            id: org.id.clone(),
            name: "Steady Shop Ltd".into(),
            plan: "basic".into(),
            ..Default::default()
        },
        &["name", "plan"],
    )
    .await
    .expect("unchanged plan");
    assert_eq!(
        (updated.name.as_str(), updated.plan.as_str()),
        ("Steady Shop Ltd", "basic")
    );
    // An organization's own admin still may not touch billing terms at all.
    let denied = update_plan(
        &app,
        &app.token("CONFIG_ADMIN", &org.id),
        proto::Organization {
            id: org.id.clone(),
            plan: "pro".into(),
            ..Default::default()
        },
        &["plan"],
    )
    .await
    .expect_err("config admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(org_row(&app, &org.id).await.plan, "basic");
    app.stop().await;
}

const CATALOGUE: &str = r#"
[[plans]]
id = "free"
name = "Free"
tier_rank = 0
limits = { max_agents = 1 }

[[plans]]
id = "starter"
name = "Starter"
tier_rank = 10
limits = { max_agents = 2 }
prices = { USD = { month = "5.00" } }
"#;

async fn plans_are_checked_against_the_configured_catalogue(backend: Backend) {
    let catalogue = Catalogue::parse(CATALOGUE, false).expect("catalogue");
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.billing.catalogue = Arc::new(catalogue);
    })
    .await
    else {
        return;
    };
    let root = app.root();
    let starter = on_plan(&app, "Starter Shop", "starter").await;
    assert_eq!(starter.plan, "starter");
    register_agent(&app, &root, &starter.id, "One").await;
    register_agent(&app, &root, &starter.id, "Two").await;
    let refused = try_register_agent(&app, &starter.id, "Three")
        .await
        .expect_err("starter allows two");
    assert_limit(&refused, "max_agents", 2, 2);
    // "basic" is a built-in plan but not in this catalogue.
    let refused = try_create(
        &app,
        &root,
        proto::Organization {
            plan: "basic".into(),
            ..named("Basic Shop")
        },
    )
    .await
    .expect_err("unknown plan");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), vec!["organization.plan"]);
    assert!(refused.message().contains("free, starter"), "{refused:?}");
    app.stop().await;
}
