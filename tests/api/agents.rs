//! Agents: registration, reads, rates, moves with history, plan limits, activation and
//! API keys.

use std::collections::HashSet;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
};
use tenantry::{
    proto,
    storage::entities::{agent_assignments, agents, api_keys},
};
use tonic::{Code, Request, Status, metadata::MetadataValue};

use crate::{
    helpers::{Backend, TestApp, authed, metadata, reason},
    on_both_backends,
    organizations::{
        agency, agency_on, agent_row, agent_uuid, create, get, mask, named, named_on, org_row,
        org_uuid, register_agent, tenant, unassign, usd,
    },
};

async fn get_agent(app: &TestApp, token: &str, id: &str) -> Result<proto::Agent, Status> {
    let request = proto::GetAgentRequest {
        agent_id: id.into(),
    };
    app.orgs()
        .get_agent(authed(request, token))
        .await
        .map(|r| r.into_inner().agent.expect("agent"))
}

async fn list_agents(
    app: &TestApp,
    token: &str,
    request: proto::ListAgentsRequest,
) -> Result<proto::ListAgentsResponse, Status> {
    app.orgs()
        .list_agents(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn update_agent(
    app: &TestApp,
    token: &str,
    agent: proto::Agent,
    paths: &[&str],
) -> Result<proto::Agent, Status> {
    let request = proto::UpdateAgentRequest {
        agent: Some(agent),
        update_mask: mask(paths),
    };
    app.orgs()
        .update_agent(authed(request, token))
        .await
        .map(|r| r.into_inner().agent.expect("agent"))
}

async fn assign(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    org_id: &str,
) -> Result<proto::AssignAgentResponse, Status> {
    let request = proto::AssignAgentRequest {
        agent_id: agent_id.into(),
        organization_id: org_id.into(),
        request_id: String::new(),
    };
    app.orgs()
        .assign_agent(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn history(app: &TestApp, agent_id: &str) -> Vec<proto::AgentAssignment> {
    let request = proto::ListAgentAssignmentsRequest {
        agent_id: agent_id.into(),
    };
    app.orgs()
        .list_agent_assignments(authed(request, &app.root()))
        .await
        .expect("list assignments")
        .into_inner()
        .assignments
}

async fn statuses(app: &TestApp, org_id: &str) -> Vec<(String, i32)> {
    let request = proto::ListAgentsRequest {
        organization_id: org_id.into(),
        ..Default::default()
    };
    let listed = list_agents(app, &app.root(), request)
        .await
        .expect("list agents");
    listed
        .agents
        .into_iter()
        .map(|a| (a.name, a.status))
        .collect()
}

const ACTIVE: i32 = proto::AgentStatus::Active as i32;
const SUSPENDED: i32 = proto::AgentStatus::Suspended as i32;

/// A tenant with a billing rate of 10.00, set by the root admin at creation, on the pro
/// plan (room for ten agents).
async fn rated_tenant(app: &TestApp, name: &str, amount: &str) -> proto::Organization {
    let organization = proto::Organization {
        billing_rate_per_agent: Some(usd(amount)),
        ..named_on(name, "pro")
    };
    create(app, &app.root(), organization).await
}

on_both_backends!(
    agents_are_registered_read_and_listed_in_pages,
    updating_an_agent_sets_its_name_and_effective_rate,
    concurrent_agent_updates_without_an_etag_all_apply,
    assigning_moves_an_agent_and_keeps_its_history,
    assigning_beyond_max_agents_fails,
    concurrent_registrations_respect_max_agents,
    deactivation_suspends_agents_and_reactivation_restores_them,
    toggle_and_set_active_switch_the_status,
    an_inactive_orgs_admin_may_only_read_its_status,
    a_regenerated_api_key_replaces_the_old_one_at_once,
    api_keys_read_but_do_not_administer,
    agents_of_other_tenants_are_invisible,
);

async fn agents_are_registered_read_and_listed_in_pages(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = rated_tenant(&app, "Acme Corp", "10.00").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let mut registered = Vec::new();
    for i in 0..5 {
        registered.push(register_agent(&app, &admin, &acme.id, &format!("Agent {i}")).await);
    }
    let first = &registered[0];
    assert!(first.id.starts_with("agt_"));
    assert_eq!(first.organization_id, acme.id);
    assert_eq!(first.status, ACTIVE);
    assert_eq!(first.billing_rate, None);
    assert_eq!(first.effective_billing_rate, Some(usd("10.00")));
    assert_eq!(
        get_agent(&app, &admin, &first.id).await.expect("get agent"),
        *first
    );
    let stored = agent_row(&app, &first.id).await;
    assert_eq!(
        (stored.organization_id, stored.name.as_str()),
        (org_uuid(&acme.id), "Agent 0")
    );
    // One open assignment per new agent.
    let open = agent_assignments::Entity::find()
        .filter(agent_assignments::Column::OrganizationId.eq(org_uuid(&acme.id)))
        .filter(agent_assignments::Column::UnassignTime.is_null())
        .all(app.store.db())
        .await
        .expect("read assignments");
    assert_eq!(open.len(), 5);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = proto::ListAgentsRequest {
            organization_id: "acme-corp".into(),
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = list_agents(&app, &admin, request).await.expect("page");
        assert!(page.agents.len() <= 2);
        seen.extend(page.agents.into_iter().map(|a| a.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(seen.len() <= 5, "paging does not end");
    }
    let expected: Vec<String> = registered.iter().map(|a| a.id.clone()).collect();
    assert_eq!(seen, expected, "registration order, each agent once");
    let member = app.token("MEMBER", &acme.id);
    let request = proto::ListAgentsRequest {
        organization_id: acme.id.clone(),
        filter: "status = SUSPENDED".into(),
        ..Default::default()
    };
    assert!(
        list_agents(&app, &member, request)
            .await
            .expect("filtered")
            .agents
            .is_empty()
    );
    let request = proto::ListAgentsRequest {
        organization_id: acme.id.clone(),
        filter: "status = ACTIVE".into(),
        ..Default::default()
    };
    assert_eq!(
        list_agents(&app, &member, request)
            .await
            .expect("filtered")
            .agents
            .len(),
        5
    );
    app.stop().await;
}

async fn updating_an_agent_sets_its_name_and_effective_rate(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let beta = agency(&app, "Beta Agency").await;
    let acme = tenant(&app, "Acme Corp", &beta.id).await;
    let root = app.root();
    let rate = proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: acme.id.clone(),
            billing_rate_per_agent: Some(usd("10.00")),
            ..Default::default()
        }),
        update_mask: mask(&["billing_rate_per_agent"]),
    };
    app.orgs()
        .update_organization(authed(rate, &root))
        .await
        .expect("org rate");
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let agent = register_agent(&app, &admin, &acme.id, "Support bot").await;
    assert_eq!(agent.effective_billing_rate, Some(usd("10.00")));
    let renamed = proto::Agent {
        id: agent.id.clone(),
        name: "Support bot v2".into(),
        etag: agent.etag.clone(),
        ..Default::default()
    };
    let updated = update_agent(&app, &admin, renamed.clone(), &["name"])
        .await
        .expect("rename");
    assert_eq!(updated.name, "Support bot v2");
    assert_ne!(updated.etag, agent.etag);
    let stale = update_agent(&app, &admin, renamed, &["name"])
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    // The tenant's own admin may not set a custom rate; its agency may.
    let custom = proto::Agent {
        id: agent.id.clone(),
        billing_rate: Some(usd("7.50")),
        ..Default::default()
    };
    let denied = update_agent(&app, &admin, custom.clone(), &["billing_rate"])
        .await
        .expect_err("own admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(agent_row(&app, &agent.id).await.billing_rate_micros, None);
    let agency_admin = app.token("AGENCY_ADMIN", &beta.id);
    let priced = update_agent(&app, &agency_admin, custom, &["billing_rate"])
        .await
        .expect("custom rate");
    assert_eq!(priced.billing_rate, Some(usd("7.50")));
    assert_eq!(priced.effective_billing_rate, Some(usd("7.50")));
    assert_eq!(
        agent_row(&app, &agent.id).await.billing_rate_micros,
        Some(7_500_000)
    );
    assert_eq!(
        get_agent(&app, &admin, &agent.id)
            .await
            .expect("get")
            .effective_billing_rate,
        Some(usd("7.50"))
    );
    // Unset in the mask clears the custom rate: the org's rate applies again.
    let clear = proto::Agent {
        id: agent.id.clone(),
        ..Default::default()
    };
    let cleared = update_agent(&app, &agency_admin, clear, &["billing_rate"])
        .await
        .expect("clear rate");
    assert_eq!(cleared.billing_rate, None);
    assert_eq!(cleared.effective_billing_rate, Some(usd("10.00")));
    let row = agent_row(&app, &agent.id).await;
    assert_eq!(
        (row.billing_rate_micros, row.name.as_str()),
        (None, "Support bot v2")
    );
    let audited = crate::organizations::audit_actions(&app, &agent.id).await;
    assert_eq!(
        audited,
        ["RegisterAgent", "UpdateAgent", "UpdateAgent", "UpdateAgent"]
    );
    app.stop().await;
}

async fn concurrent_agent_updates_without_an_etag_all_apply(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let agent = register_agent(&app, &root, &acme.id, "Bot").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let request = proto::UpdateAgentRequest {
            agent: Some(proto::Agent {
                id: agent.id.clone(),
                name: format!("Bot {i}"),
                ..Default::default()
            }),
            update_mask: mask(&["name"]),
        };
        let request = authed(request, &root);
        let mut client = crate::organizations::own_connection(&app);
        tasks.push(tokio::spawn(
            async move { client.update_agent(request).await },
        ));
    }
    for task in tasks {
        task.await
            .expect("task")
            .expect("an update without an etag is unconditional");
    }
    let row = agent_row(&app, &agent.id).await;
    assert_eq!(row.version, 9);
    assert!(row.name.starts_with("Bot "));
    app.stop().await;
}

async fn assigning_moves_an_agent_and_keeps_its_history(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = rated_tenant(&app, "Acme Corp", "10.00").await;
    let zeta = rated_tenant(&app, "Zeta Solo", "20.00").await;
    let internal = get(&app, &root, "internal").await.expect("root org");
    let agent = register_agent(&app, &root, &acme.id, "Roaming bot").await;
    let custom = proto::Agent {
        id: agent.id.clone(),
        billing_rate: Some(usd("15.00")),
        ..Default::default()
    };
    update_agent(&app, &root, custom, &["billing_rate"])
        .await
        .expect("custom rate");
    let moved = assign(&app, &root, &agent.id, &zeta.id)
        .await
        .expect("assign");
    assert_eq!(moved.previous_organization_id, acme.id);
    let moved_agent = moved.agent.expect("agent");
    assert_eq!(moved_agent.organization_id, zeta.id);
    assert_eq!(
        moved_agent.billing_rate, None,
        "a move clears the custom rate"
    );
    assert_eq!(moved_agent.effective_billing_rate, Some(usd("20.00")));
    assert_eq!(agent_row(&app, &agent.id).await.billing_rate_micros, None);
    let periods = history(&app, &agent.id).await;
    assert_eq!(periods.len(), 2);
    assert_eq!(periods[0].organization_id, zeta.id);
    assert_eq!(periods[0].unassign_time, None);
    assert_eq!(periods[1].organization_id, acme.id);
    assert_eq!(
        periods[1].unassign_time, periods[0].assign_time,
        "a clean cut-over"
    );
    // Assigning to the org it is in changes nothing.
    let same = assign(&app, &root, &agent.id, "zeta-solo")
        .await
        .expect("assign in place");
    assert_eq!(same.agent.expect("agent").organization_id, zeta.id);
    assert_eq!(history(&app, &agent.id).await.len(), 2);
    let back = unassign(&app, &agent.id).await;
    assert_eq!(back.organization_id, internal.id);
    assert_eq!(back.status, ACTIVE);
    let periods = history(&app, &agent.id).await;
    let orgs: Vec<&str> = periods.iter().map(|p| p.organization_id.as_str()).collect();
    assert_eq!(
        orgs,
        [internal.id.as_str(), zeta.id.as_str(), acme.id.as_str()]
    );
    let stored = agent_assignments::Entity::find()
        .filter(agent_assignments::Column::AgentId.eq(agent_uuid(&agent.id)))
        .all(app.store.db())
        .await
        .expect("read assignments");
    assert_eq!(stored.len(), 3);
    assert_eq!(
        stored.iter().filter(|a| a.unassign_time.is_none()).count(),
        1
    );
    assert_eq!(
        agent_row(&app, &agent.id).await.organization_id,
        org_uuid(&internal.id)
    );
    assert_eq!(
        get(&app, &root, &acme.id).await.expect("acme").agent_count,
        0
    );
    let audited = crate::organizations::audit_actions(&app, &agent.id).await;
    // A move is recorded in both organizations.
    assert_eq!(
        audited,
        [
            "RegisterAgent",
            "UpdateAgent",
            "AssignAgent",
            "AssignAgent",
            "UnassignAgent",
            "UnassignAgent"
        ]
    );
    // An agency admin moves agents between its own tenants only.
    let beta = agency_on(&app, "Beta Agency", "pro").await;
    let one = tenant(&app, "One", &beta.id).await;
    let two = tenant(&app, "Two", &beta.id).await;
    let agency_admin = app.token("AGENCY_ADMIN", &beta.id);
    let bot = register_agent(&app, &agency_admin, &one.id, "Agency bot").await;
    assign(&app, &agency_admin, &bot.id, &two.id)
        .await
        .expect("move within the agency");
    let denied = assign(&app, &agency_admin, &bot.id, &zeta.id)
        .await
        .expect_err("foreign target");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = assign(&app, &agency_admin, &agent.id, &two.id)
        .await
        .expect_err("foreign agent");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        agent_row(&app, &bot.id).await.organization_id,
        org_uuid(&two.id)
    );
    app.stop().await;
}

async fn assigning_beyond_max_agents_fails(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // The organization's own limit of 2 caps the pro plan's 10.
    let limited = proto::Organization {
        usage_limits: Some(proto::UsageLimits {
            max_agents: 2,
            ..Default::default()
        }),
        ..named_on("Small Plan", "pro")
    };
    let small = create(&app, &root, limited).await;
    assert_eq!(small.usage_limits.as_ref().map(|l| l.max_agents), Some(2));
    register_agent(&app, &root, &small.id, "One").await;
    let spare = register_agent(&app, &root, "", "Spare").await;
    assign(&app, &root, &spare.id, &small.id)
        .await
        .expect("second agent fits");
    let extra = register_agent(&app, &root, "", "Extra").await;
    let full = assign(&app, &root, &extra.id, &small.id)
        .await
        .expect_err("over the limit");
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert_eq!(reason(&full), "PLAN_LIMIT_REACHED");
    assert_eq!(metadata(&full, "limit").as_deref(), Some("max_agents"));
    assert_eq!(metadata(&full, "allowed").as_deref(), Some("2"));
    assert_eq!(metadata(&full, "current").as_deref(), Some("2"));
    let internal = get(&app, &root, "internal").await.expect("root");
    assert_eq!(
        agent_row(&app, &extra.id).await.organization_id,
        org_uuid(&internal.id)
    );
    assert_eq!(history(&app, &extra.id).await.len(), 1);
    let request = proto::RegisterAgentRequest {
        organization_id: small.id.clone(),
        agent: Some(proto::Agent {
            name: "Too many".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let full = app
        .orgs()
        .register_agent(authed(request, &root))
        .await
        .expect_err("register over the limit");
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert_eq!(reason(&full), "PLAN_LIMIT_REACHED");
    assert_eq!(
        get(&app, &root, &small.id).await.expect("get").agent_count,
        2
    );
    assert_eq!(crate::organizations::rows::<agents::Entity>(&app).await, 3);
    app.stop().await;
}

async fn concurrent_registrations_respect_max_agents(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // The organization's own limit of 3 caps the pro plan's 10.
    let limited = proto::Organization {
        usage_limits: Some(proto::UsageLimits {
            max_agents: 3,
            ..Default::default()
        }),
        ..named_on("Small Plan", "pro")
    };
    let small = create(&app, &root, limited).await;
    let mut spares = Vec::new();
    for i in 0..4 {
        spares.push(register_agent(&app, &root, "", &format!("Spare {i}")).await);
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut client = crate::organizations::own_connection(&app);
        if i % 2 == 0 {
            let request = proto::RegisterAgentRequest {
                organization_id: small.id.clone(),
                agent: Some(proto::Agent {
                    name: format!("New {i}"),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let request = authed(request, &root);
            tasks.push(tokio::spawn(async move {
                client.register_agent(request).await.map(|_| ())
            }));
        } else {
            let request = proto::AssignAgentRequest {
                agent_id: spares[i / 2].id.clone(),
                organization_id: small.id.clone(),
                request_id: String::new(),
            };
            let request = authed(request, &root);
            tasks.push(tokio::spawn(async move {
                client.assign_agent(request).await.map(|_| ())
            }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "PLAN_LIMIT_REACHED");
            }
        }
    }
    assert_eq!(admitted, 3);
    let stored = agents::Entity::find()
        .filter(agents::Column::OrganizationId.eq(org_uuid(&small.id)))
        .all(app.store.db())
        .await
        .expect("read agents");
    assert_eq!(stored.len(), 3, "the limit was overrun");
    app.stop().await;
}

async fn deactivation_suspends_agents_and_reactivation_restores_them(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named_on("Acme Corp", "pro")).await;
    for name in ["A", "B", "C"] {
        register_agent(&app, &root, &acme.id, name).await;
    }
    // "C" was suspended for its own reasons (an operator action outside this API).
    let c = agents::Entity::find()
        .filter(agents::Column::Name.eq("C"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("agent C");
    let mut row = c.into_active_model();
    row.status = Set("SUSPENDED".into());
    row.update(app.store.db()).await.expect("suspend C");
    let missing = proto::DeactivateOrganizationRequest {
        organization_id: acme.id.clone(),
        reason: "  ".into(),
        notify_owner: true,
    };
    let refused = app
        .orgs()
        .deactivate_organization(authed(missing, &root))
        .await
        .expect_err("reason required");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(crate::helpers::violations(&refused), ["reason"]);
    assert_eq!(org_row(&app, &acme.id).await.status, "ACTIVE");
    let request = proto::DeactivateOrganizationRequest {
        organization_id: acme.id.clone(),
        reason: "Non-payment".into(),
        notify_owner: true,
    };
    let deactivated = app
        .orgs()
        .deactivate_organization(authed(request, &root))
        .await
        .expect("deactivate")
        .into_inner();
    assert_eq!(deactivated.suspended_agents, 2);
    let org = deactivated.organization.expect("organization");
    assert_eq!(org.status, proto::OrganizationStatus::Inactive as i32);
    assert_eq!(org.deactivation_reason, "Non-payment");
    assert_eq!(
        statuses(&app, &acme.id).await,
        [
            ("A".into(), SUSPENDED),
            ("B".into(), SUSPENDED),
            ("C".into(), SUSPENDED)
        ]
    );
    // An agent registered while the org is inactive starts suspended.
    register_agent(&app, &root, &acme.id, "D").await;
    let request = proto::ReactivateOrganizationRequest {
        organization_id: acme.id.clone(),
    };
    let reactivated = app
        .orgs()
        .reactivate_organization(authed(request, &root))
        .await
        .expect("reactivate")
        .into_inner();
    assert_eq!(reactivated.restored_agents, 3);
    assert_eq!(
        reactivated.organization.expect("org").deactivation_reason,
        ""
    );
    assert_eq!(
        statuses(&app, &acme.id).await,
        [
            ("A".into(), ACTIVE),
            ("B".into(), ACTIVE),
            ("C".into(), SUSPENDED),
            ("D".into(), ACTIVE)
        ]
    );
    let stored = org_row(&app, &acme.id).await;
    assert_eq!(
        (stored.status.as_str(), stored.deactivation_reason.as_str()),
        ("ACTIVE", "")
    );
    // The root organization cannot be deactivated.
    let request = proto::DeactivateOrganizationRequest {
        organization_id: "internal".into(),
        reason: "oops".into(),
        notify_owner: false,
    };
    let refused = app
        .orgs()
        .deactivate_organization(authed(request, &root))
        .await
        .expect_err("root");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    app.stop().await;
}

async fn toggle_and_set_active_switch_the_status(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let beta = agency(&app, "Beta Agency").await;
    let acme = tenant(&app, "Acme Corp", &beta.id).await;
    let manager = app.token("AGENCY_ADMIN", &beta.id);
    let agent = register_agent(&app, &manager, &acme.id, "Bot").await;
    let toggle = || {
        let request = authed(
            proto::ToggleOrganizationActiveRequest {
                organization_id: acme.id.clone(),
            },
            &manager,
        );
        let mut client = app.orgs();
        async move {
            client
                .toggle_organization_active(request)
                .await
                .expect("toggle")
                .into_inner()
        }
    };
    let off = toggle().await.organization.expect("org");
    assert_eq!(off.status, proto::OrganizationStatus::Inactive as i32);
    assert_eq!(agent_row(&app, &agent.id).await.status, "SUSPENDED");
    let on = toggle().await.organization.expect("org");
    assert_eq!(on.status, proto::OrganizationStatus::Active as i32);
    assert_eq!(agent_row(&app, &agent.id).await.status, "ACTIVE");
    let set = |active: bool| {
        let request = proto::SetOrganizationActiveRequest {
            organization_id: acme.id.clone(),
            active,
            reason: "Maintenance".into(),
        };
        let request = authed(request, &manager);
        let mut client = app.orgs();
        async move {
            client
                .set_organization_active(request)
                .await
                .expect("set active")
                .into_inner()
        }
    };
    assert_eq!(
        set(false).await.organization.expect("org").status,
        proto::OrganizationStatus::Inactive as i32
    );
    assert_eq!(
        set(false).await.organization.expect("org").status,
        proto::OrganizationStatus::Inactive as i32
    );
    assert_eq!(
        get_agent(&app, &manager, &agent.id)
            .await
            .expect("agent")
            .status,
        SUSPENDED
    );
    assert_eq!(
        org_row(&app, &acme.id).await.deactivation_reason,
        "Maintenance"
    );
    assert_eq!(
        set(true).await.organization.expect("org").status,
        proto::OrganizationStatus::Active as i32
    );
    assert_eq!(
        get_agent(&app, &manager, &agent.id)
            .await
            .expect("agent")
            .status,
        ACTIVE
    );
    // The tenant's own admin may not switch its activation.
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let request = proto::ToggleOrganizationActiveRequest {
        organization_id: acme.id.clone(),
    };
    let denied = app
        .orgs()
        .toggle_organization_active(authed(request, &admin))
        .await
        .expect_err("own admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(org_row(&app, &acme.id).await.status, "ACTIVE");
    app.stop().await;
}

async fn an_inactive_orgs_admin_may_only_read_its_status(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    register_agent(&app, &admin, &acme.id, "Bot").await;
    let key = app
        .orgs()
        .regenerate_api_key(authed(
            proto::RegenerateApiKeyRequest {
                organization_id: acme.id.clone(),
            },
            &admin,
        ))
        .await
        .expect("key")
        .into_inner()
        .api_key;
    let request = proto::DeactivateOrganizationRequest {
        organization_id: acme.id.clone(),
        reason: "Non-payment".into(),
        notify_owner: false,
    };
    app.orgs()
        .deactivate_organization(authed(request, &root))
        .await
        .expect("deactivate");
    let list = || proto::ListAgentsRequest {
        organization_id: acme.id.clone(),
        ..Default::default()
    };
    for credential in [&admin, &key] {
        let refused = list_agents(&app, credential, list())
            .await
            .expect_err("inactive org");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "ORG_INACTIVE");
        let own = get(&app, credential, &acme.id)
            .await
            .expect("status stays readable");
        assert_eq!(own.status, proto::OrganizationStatus::Inactive as i32);
    }
    let rename = proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: acme.id.clone(),
            name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
    };
    let refused = app
        .orgs()
        .update_organization(authed(rename, &admin))
        .await
        .expect_err("inactive org");
    assert_eq!(reason(&refused), "ORG_INACTIVE");
    assert_eq!(org_row(&app, &acme.id).await.name, "Acme Corp");
    // Operators still work on it, and reactivation lets the admin back in.
    assert_eq!(
        list_agents(&app, &root, list())
            .await
            .expect("operator")
            .agents
            .len(),
        1
    );
    let request = proto::SetOrganizationActiveRequest {
        organization_id: acme.id.clone(),
        active: true,
        reason: String::new(),
    };
    app.orgs()
        .set_organization_active(authed(request, &root))
        .await
        .expect("reactivate");
    assert_eq!(
        list_agents(&app, &admin, list())
            .await
            .expect("active again")
            .agents
            .len(),
        1
    );
    app.stop().await;
}

fn with_x_api_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = key.parse().expect("header value");
    request.metadata_mut().insert("x-api-key", value);
    request
}

async fn a_regenerated_api_key_replaces_the_old_one_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = create(&app, &app.root(), named("Acme Corp")).await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let regenerate = || {
        let request = authed(
            proto::RegenerateApiKeyRequest {
                organization_id: acme.id.clone(),
            },
            &admin,
        );
        let mut client = app.orgs();
        async move {
            client
                .regenerate_api_key(request)
                .await
                .expect("regenerate")
                .into_inner()
        }
    };
    let old = regenerate().await;
    assert!(old.api_key.starts_with("ak_"));
    assert!(old.api_key.starts_with(&old.api_key_prefix));
    let read = |key: String, header: bool| {
        let message = proto::GetOrganizationRequest {
            organization_id: acme.id.clone(),
        };
        let request = if header {
            with_x_api_key(message, &key)
        } else {
            authed(message, &key)
        };
        let mut client = app.orgs();
        async move {
            client
                .get_organization(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    read(old.api_key.clone(), false).await.expect("bearer key");
    read(old.api_key.clone(), true).await.expect("x-api-key");
    let new = regenerate().await;
    assert_ne!(new.api_key, old.api_key);
    for header in [false, true] {
        let refused = read(old.api_key.clone(), header)
            .await
            .expect_err("old key");
        assert_eq!(refused.code(), Code::Unauthenticated);
        read(new.api_key.clone(), header).await.expect("new key");
    }
    let keys = api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(org_uuid(&acme.id)))
        .all(app.store.db())
        .await
        .expect("read keys");
    assert_eq!(keys.len(), 2);
    let live: Vec<_> = keys.iter().filter(|k| k.revoke_time.is_none()).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].prefix, new.api_key_prefix);
    assert!(
        keys.iter()
            .all(|k| k.key_hash != new.api_key && k.key_hash.len() == 64),
        "only hashes are stored"
    );
    let garbage = read("ak_not-a-real-key".into(), false)
        .await
        .expect_err("unknown key");
    assert_eq!(garbage.code(), Code::Unauthenticated);
    app.stop().await;
}

async fn api_keys_read_but_do_not_administer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let other = create(&app, &root, named("Other")).await;
    register_agent(&app, &root, &acme.id, "Bot").await;
    let key = app
        .orgs()
        .regenerate_api_key(authed(
            proto::RegenerateApiKeyRequest {
                organization_id: acme.id.clone(),
            },
            &root,
        ))
        .await
        .expect("key")
        .into_inner()
        .api_key;
    assert_eq!(
        get(&app, &key, "acme-corp").await.expect("own org").id,
        acme.id
    );
    let request = proto::ListAgentsRequest {
        organization_id: acme.id.clone(),
        ..Default::default()
    };
    assert_eq!(
        list_agents(&app, &key, request)
            .await
            .expect("own agents")
            .agents
            .len(),
        1
    );
    let denied = get(&app, &key, &other.id).await.expect_err("other org");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let rename = proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: acme.id.clone(),
            name: "Hijacked".into(),
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
    };
    let denied = app
        .orgs()
        .update_organization(authed(rename, &key))
        .await
        .expect_err("keys do not administer");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let request = proto::RegenerateApiKeyRequest {
        organization_id: acme.id.clone(),
    };
    let denied = app
        .orgs()
        .regenerate_api_key(authed(request, &key))
        .await
        .expect_err("keys do not rotate keys");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let stored = org_row(&app, &acme.id).await;
    assert_eq!((stored.name.as_str(), stored.version), ("Acme Corp", 1));
    app.stop().await;
}

async fn agents_of_other_tenants_are_invisible(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let other = create(&app, &root, named("Other")).await;
    let agent = register_agent(&app, &root, &acme.id, "Private bot").await;
    let stranger = app.token("CONFIG_ADMIN", &other.id);
    let unknown =
        tenantry::domain::ids::encode(tenantry::domain::ids::IdKind::Agent, uuid::Uuid::now_v7());
    let mut codes = HashSet::new();
    for id in [agent.id.as_str(), unknown.as_str(), "garbage"] {
        let denied = get_agent(&app, &stranger, id)
            .await
            .expect_err("foreign agent");
        codes.insert(denied.code());
    }
    assert_eq!(codes, HashSet::from([Code::PermissionDenied]));
    let denied = list_agents(
        &app,
        &stranger,
        proto::ListAgentsRequest {
            organization_id: acme.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect_err("foreign list");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let rename = proto::Agent {
        id: agent.id.clone(),
        name: "Mine now".into(),
        ..Default::default()
    };
    let denied = update_agent(&app, &stranger, rename, &["name"])
        .await
        .expect_err("foreign update");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(agent_row(&app, &agent.id).await.name, "Private bot");
    // Operators get real answers.
    let missing = get_agent(&app, &root, &unknown).await.expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = get_agent(&app, &root, "garbage")
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    app.stop().await;
}
