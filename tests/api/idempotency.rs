//! `request_id` idempotency: a retry returns the first result and changes nothing, a
//! reused id with other arguments fails, and concurrent twins write once.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
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
    organizations::{agent_row, agent_uuid, create, named, org_uuid, register_agent, rows},
};

const PARALLEL: usize = 8;

fn create_request(request_id: &str, name: &str) -> proto::CreateOrganizationRequest {
    proto::CreateOrganizationRequest {
        request_id: request_id.into(),
        organization: Some(named(name)),
        owner: None,
    }
}

async fn create_with(
    app: &TestApp,
    token: &str,
    request: proto::CreateOrganizationRequest,
) -> Result<proto::CreateOrganizationResponse, Status> {
    app.orgs()
        .create_organization(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn assign_with(
    app: &TestApp,
    request_id: &str,
    agent_id: &str,
    org_id: &str,
) -> Result<proto::AssignAgentResponse, Status> {
    let request = proto::AssignAgentRequest {
        agent_id: agent_id.into(),
        organization_id: org_id.into(),
        request_id: request_id.into(),
    };
    app.orgs()
        .assign_agent(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner())
}

async fn audits_of(app: &TestApp, action: &str) -> u64 {
    audit_entries::Entity::find()
        .filter(audit_entries::Column::Action.eq(action))
        .count(app.store.db())
        .await
        .expect("count audit entries")
}

async fn assignments_of(app: &TestApp, agent_id: &str) -> Vec<agent_assignments::Model> {
    agent_assignments::Entity::find()
        .filter(agent_assignments::Column::AgentId.eq(agent_uuid(agent_id)))
        .all(app.store.db())
        .await
        .expect("read assignments")
}

on_both_backends!(
    a_repeated_create_returns_the_first_org,
    a_reused_request_id_with_other_arguments_fails,
    concurrent_identical_creates_write_once,
    a_repeated_assign_moves_once,
    concurrent_identical_assigns_move_once,
    repeated_register_and_delete_are_replayed,
    concurrent_identical_registers_and_deletes_write_once,
    a_replayed_create_never_stores_or_reshows_the_owner_token,
);

async fn a_repeated_create_returns_the_first_org(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let first = create_with(&app, &root, create_request("req-1", "AgenticMail"))
        .await
        .expect("first");
    let retry = create_with(&app, &root, create_request("req-1", "AgenticMail"))
        .await
        .expect("retry");
    assert_eq!(retry, first);
    assert_eq!(rows::<organizations::Entity>(&app).await, 2);
    assert_eq!(audits_of(&app, "CreateOrganization").await, 1);
    assert_eq!(rows::<idempotency_records::Entity>(&app).await, 1);
    let audit = audit_entries::Entity::find()
        .filter(audit_entries::Column::Action.eq("CreateOrganization"))
        .one(app.store.db())
        .await
        .expect("read audit")
        .expect("audit entry");
    assert_eq!(audit.request_id, "req-1");
    // Keys belong to their principal: another caller's "req-1" is a new request.
    let other = app.token_for("ROOT_ADMIN", "internal", "another-admin", None);
    let theirs = create_with(&app, &other, create_request("req-1", "AgenticMail"))
        .await
        .expect("other principal");
    let theirs = theirs.organization.expect("organization");
    assert_ne!(Some(&theirs.id), first.organization.as_ref().map(|o| &o.id));
    assert_eq!(theirs.slug, "agenticmail-2");
    // Without a request id every call creates.
    create_with(&app, &root, create_request("", "AgenticMail"))
        .await
        .expect("no id");
    create_with(&app, &root, create_request("", "AgenticMail"))
        .await
        .expect("no id");
    assert_eq!(rows::<organizations::Entity>(&app).await, 5);
    app.stop().await;
}

async fn a_reused_request_id_with_other_arguments_fails(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    create_with(&app, &root, create_request("req-1", "AgenticMail"))
        .await
        .expect("first");
    let before = (
        rows::<organizations::Entity>(&app).await,
        rows::<audit_entries::Entity>(&app).await,
    );
    let changed = create_with(&app, &root, create_request("req-1", "Acme Corp"))
        .await
        .expect_err("other arguments");
    assert_eq!(changed.code(), Code::InvalidArgument);
    assert_eq!(violations(&changed), ["request_id"]);
    // The same id on another method is a different request too.
    let request = proto::RegisterAgentRequest {
        request_id: "req-1".into(),
        organization_id: String::new(),
        agent: Some(proto::Agent {
            name: "Bot".into(),
            ..Default::default()
        }),
    };
    let other_method = app
        .orgs()
        .register_agent(authed(request, &root))
        .await
        .expect_err("other method");
    assert_eq!(other_method.code(), Code::InvalidArgument);
    assert_eq!(violations(&other_method), ["request_id"]);
    assert_eq!(
        (
            rows::<organizations::Entity>(&app).await,
            rows::<audit_entries::Entity>(&app).await
        ),
        before
    );
    assert_eq!(rows::<agents::Entity>(&app).await, 0);
    app.stop().await;
}

/// Sends `PARALLEL` copies of `request` at once; every one must succeed.
async fn create_twins(
    app: &TestApp,
    request: proto::CreateOrganizationRequest,
) -> Vec<proto::CreateOrganizationResponse> {
    let root = app.root();
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let request = authed(request.clone(), &root);
        let mut client = crate::organizations::own_connection(app);
        tasks.push(tokio::spawn(async move {
            client
                .create_organization(request)
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.expect("task").expect("every twin succeeds"));
    }
    responses
}

async fn concurrent_identical_creates_write_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let generated = create_twins(&app, create_request("race-1", "Race Corp")).await;
    assert!(
        generated.iter().all(|r| r == &generated[0]),
        "twins got different answers"
    );
    let id = generated[0]
        .organization
        .as_ref()
        .expect("organization")
        .id
        .clone();
    assert_eq!(rows::<organizations::Entity>(&app).await, 2);
    assert_eq!(audits_of(&app, "CreateOrganization").await, 1);
    let stored = organizations::Entity::find_by_id(org_uuid(&id))
        .one(app.store.db())
        .await
        .expect("read");
    assert_eq!(stored.expect("row").slug, "race-corp");
    // With an explicit slug the losers hit the slug's unique key instead.
    let mut explicit = create_request("race-2", "Race Corp");
    if let Some(org) = explicit.organization.as_mut() {
        org.slug = "race-explicit".into();
    }
    let explicit = create_twins(&app, explicit).await;
    assert!(
        explicit.iter().all(|r| r == &explicit[0]),
        "twins got different answers"
    );
    assert_eq!(
        explicit[0]
            .organization
            .as_ref()
            .expect("organization")
            .slug,
        "race-explicit"
    );
    assert_eq!(rows::<organizations::Entity>(&app).await, 3);
    assert_eq!(audits_of(&app, "CreateOrganization").await, 2);
    assert_eq!(rows::<idempotency_records::Entity>(&app).await, 2);
    app.stop().await;
}

async fn a_repeated_assign_moves_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let zeta = create(&app, &root, named("Zeta Solo")).await;
    let agent = register_agent(&app, &root, &acme.id, "Bot").await;
    let first = assign_with(&app, "move-1", &agent.id, &zeta.id)
        .await
        .expect("assign");
    let retry = assign_with(&app, "move-1", &agent.id, &zeta.id)
        .await
        .expect("retry");
    assert_eq!(retry, first);
    assert_eq!(retry.previous_organization_id, acme.id);
    assert_eq!(assignments_of(&app, &agent.id).await.len(), 2);
    assert_eq!(
        audits_of(&app, "AssignAgent").await,
        2,
        "one entry in each org, once"
    );
    let changed = assign_with(&app, "move-1", &agent.id, &acme.id)
        .await
        .expect_err("other arguments");
    assert_eq!(changed.code(), Code::InvalidArgument);
    assert_eq!(violations(&changed), ["request_id"]);
    assert_eq!(
        agent_row(&app, &agent.id).await.organization_id,
        org_uuid(&zeta.id)
    );
    // A later move does not make the old retry move the agent back.
    assign_with(&app, "move-2", &agent.id, &acme.id)
        .await
        .expect("move back");
    let late = assign_with(&app, "move-1", &agent.id, &zeta.id)
        .await
        .expect("late retry");
    assert_eq!(late, first);
    assert_eq!(
        agent_row(&app, &agent.id).await.organization_id,
        org_uuid(&acme.id)
    );
    assert_eq!(assignments_of(&app, &agent.id).await.len(), 3);
    app.stop().await;
}

async fn concurrent_identical_assigns_move_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let zeta = create(&app, &root, named("Zeta Solo")).await;
    let agent = register_agent(&app, &root, &acme.id, "Bot").await;
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let request = proto::AssignAgentRequest {
            agent_id: agent.id.clone(),
            organization_id: zeta.id.clone(),
            request_id: "race-move".into(),
        };
        let request = authed(request, &root);
        let mut client = crate::organizations::own_connection(&app);
        tasks.push(tokio::spawn(async move {
            client.assign_agent(request).await.map(|r| r.into_inner())
        }));
    }
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.expect("task").expect("every twin succeeds"));
    }
    for response in &responses {
        assert_eq!(response, &responses[0]);
    }
    assert_eq!(responses[0].previous_organization_id, acme.id);
    let periods = assignments_of(&app, &agent.id).await;
    assert_eq!(periods.len(), 2, "moved more than once");
    assert_eq!(
        periods.iter().filter(|p| p.unassign_time.is_none()).count(),
        1
    );
    assert_eq!(audits_of(&app, "AssignAgent").await, 2);
    assert_eq!(
        agent_row(&app, &agent.id).await.organization_id,
        org_uuid(&zeta.id)
    );
    app.stop().await;
}

async fn repeated_register_and_delete_are_replayed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let register = || proto::RegisterAgentRequest {
        request_id: "agent-1".into(),
        organization_id: acme.id.clone(),
        agent: Some(proto::Agent {
            name: "Bot".into(),
            ..Default::default()
        }),
    };
    let first = app
        .orgs()
        .register_agent(authed(register(), &root))
        .await
        .expect("register")
        .into_inner();
    let retry = app
        .orgs()
        .register_agent(authed(register(), &root))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry, first);
    assert_eq!(rows::<agents::Entity>(&app).await, 1);
    let agent_id = first.agent.expect("agent").id;
    crate::organizations::unassign(&app, &agent_id).await;
    let delete = || proto::DeleteOrganizationRequest {
        organization_id: acme.id.clone(),
        etag: String::new(),
        request_id: "delete-1".into(),
    };
    let deleted = app
        .orgs()
        .delete_organization(authed(delete(), &root))
        .await
        .expect("delete")
        .into_inner();
    let again = app
        .orgs()
        .delete_organization(authed(delete(), &root))
        .await
        .expect("retry of a delete")
        .into_inner();
    assert_eq!(again, deleted);
    assert_eq!(audits_of(&app, "DeleteOrganization").await, 1);
    app.stop().await;
}

async fn concurrent_identical_registers_and_deletes_write_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // One free place left: the twins must not see each other's agent as a second one.
    let limited = proto::Organization {
        usage_limits: Some(proto::UsageLimits {
            max_agents: 1,
            ..Default::default()
        }),
        ..named("Small Plan")
    };
    let small = create(&app, &root, limited).await;
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let request = proto::RegisterAgentRequest {
            request_id: "race-agent".into(),
            organization_id: small.id.clone(),
            agent: Some(proto::Agent {
                name: "Bot".into(),
                ..Default::default()
            }),
        };
        let request = authed(request, &root);
        let mut client = crate::organizations::own_connection(&app);
        tasks.push(tokio::spawn(async move {
            client.register_agent(request).await.map(|r| r.into_inner())
        }));
    }
    let mut registered = Vec::new();
    for task in tasks {
        registered.push(task.await.expect("task").expect("every twin succeeds"));
    }
    assert!(
        registered.iter().all(|r| r == &registered[0]),
        "twins got different agents"
    );
    assert_eq!(rows::<agents::Entity>(&app).await, 1);
    assert_eq!(audits_of(&app, "RegisterAgent").await, 1);
    let agent_id = registered[0].agent.as_ref().expect("agent").id.clone();
    crate::organizations::unassign(&app, &agent_id).await;
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let request = proto::DeleteOrganizationRequest {
            organization_id: small.id.clone(),
            etag: String::new(),
            request_id: "race-delete".into(),
        };
        let request = authed(request, &root);
        let mut client = crate::organizations::own_connection(&app);
        tasks.push(tokio::spawn(async move {
            client
                .delete_organization(request)
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut deleted = Vec::new();
    for task in tasks {
        deleted.push(task.await.expect("task").expect("every twin succeeds"));
    }
    assert!(
        deleted.iter().all(|r| r == &deleted[0]),
        "twins got different answers"
    );
    assert_eq!(audits_of(&app, "DeleteOrganization").await, 1);
    app.stop().await;
}

async fn a_replayed_create_never_stores_or_reshows_the_owner_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let request = proto::CreateOrganizationRequest {
        request_id: "create-with-owner".into(),
        organization: Some(named("Owned Co")),
        owner: Some(proto::OwnerInvite {
            email: "jane@owned.example".into(),
            first_name: "Jane".into(),
            last_name: "Smith".into(),
        }),
    };
    let mut orgs = app.orgs();
    let first = orgs
        .create_organization(authed(request.clone(), &app.root()))
        .await
        .expect("create")
        .into_inner();
    assert!(first.owner_invitation_token.starts_with("ivt_tok_"));
    let stored: Vec<idempotency_records::Model> = idempotency_records::Entity::find()
        .all(app.store.db())
        .await
        .expect("records");
    assert_eq!(stored.len(), 1);
    let token_bytes = first.owner_invitation_token.as_bytes();
    assert!(
        !stored[0]
            .response
            .windows(token_bytes.len())
            .any(|w| w == token_bytes),
        "the invitation token must not be kept in clear"
    );
    let replay = orgs
        .create_organization(authed(request, &app.root()))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.organization, first.organization);
    assert_eq!(
        replay.owner_invitation.map(|i| i.id),
        first.owner_invitation.map(|i| i.id)
    );
    assert!(replay.owner_invitation_token.is_empty());
    app.stop().await;
}
