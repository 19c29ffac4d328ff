//! Tenant transfers between agencies (SPEC §7, seed 004): request, accept, reject,
//! cancel, expiry, who may decide, one pending transfer per tenant, races, the target's
//! plan limit, events, audit, lists and idempotent requests.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};
use tenantry::{
    domain::{
        clock::FixedClock,
        ids::{self, IdKind},
    },
    proto::{self, tenant_transfer_service_client::TenantTransferServiceClient},
    storage::entities::{members, outbox_events, tenant_transfers},
};
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    credits::{balance_amount, gift},
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{
        agency_on, agent_row, audit_actions, get, org_row, org_uuid, register_agent, tenant,
    },
    subscriptions::{current, mid_november, subscribe},
};

on_both_backends!(
    an_accepted_transfer_moves_the_tenant_and_keeps_everything_else,
    a_rejected_transfer_leaves_the_tenant_where_it_was,
    the_requesters_side_cancels_and_the_target_cannot,
    an_undecided_transfer_shows_and_fails_as_expired,
    the_dispatcher_expires_undecided_transfers,
    only_the_target_agency_or_a_root_admin_decides,
    a_transfer_to_self_managed_needs_a_root_admin,
    a_tenant_has_one_pending_transfer_and_requests_are_idempotent,
    bad_requests_are_refused_before_anything_is_written,
    concurrent_accept_and_cancel_have_one_winner,
    a_full_target_agency_refuses_the_tenant,
    lists_follow_direction_status_filter_and_pages,
    deleting_the_tenant_cancels_its_pending_transfer,
    deleting_the_target_agency_cancels_the_transfers_aimed_at_it,
    accepting_after_the_target_agency_was_deactivated_fails,
);

fn new_request_id() -> String {
    Uuid::now_v7().to_string()
}

fn to_agency(
    tenant_id: &str,
    target: &str,
    request_id: &str,
) -> proto::RequestTenantTransferRequest {
    proto::RequestTenantTransferRequest {
        organization_id: tenant_id.into(),
        target_agency_id: target.into(),
        note: "the client wants to switch agencies".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// RequestTenantTransfer as `token`.
async fn try_request(
    app: &TestApp,
    token: &str,
    request: proto::RequestTenantTransferRequest,
) -> Result<proto::TenantTransfer, Status> {
    app.transfers()
        .request_tenant_transfer(authed(request, token))
        .await
        .map(|r| r.into_inner().transfer.expect("transfer"))
}

/// A transfer of `tenant_id` to `target` requested by `token`, expected to succeed.
async fn request(
    app: &TestApp,
    token: &str,
    tenant_id: &str,
    target: &str,
) -> proto::TenantTransfer {
    try_request(app, token, to_agency(tenant_id, target, &new_request_id()))
        .await
        .expect("request transfer")
}

async fn accept(
    app: &TestApp,
    token: &str,
    tenant_id: &str,
    transfer_id: &str,
) -> Result<proto::TenantTransfer, Status> {
    accept_on(&app.transfers(), token, tenant_id, transfer_id).await
}

async fn accept_on(
    client: &TenantTransferServiceClient<Channel>,
    token: &str,
    tenant_id: &str,
    transfer_id: &str,
) -> Result<proto::TenantTransfer, Status> {
    let request = proto::AcceptTenantTransferRequest {
        organization_id: tenant_id.into(),
        transfer_id: transfer_id.into(),
        note: "welcome aboard".into(),
        ..Default::default()
    };
    client
        .clone()
        .accept_tenant_transfer(authed(request, token))
        .await
        .map(|r| r.into_inner().transfer.expect("transfer"))
}

async fn reject(
    app: &TestApp,
    token: &str,
    tenant_id: &str,
    transfer_id: &str,
) -> Result<proto::TenantTransfer, Status> {
    let request = proto::RejectTenantTransferRequest {
        organization_id: tenant_id.into(),
        transfer_id: transfer_id.into(),
        reason: "we do not serve this market".into(),
        ..Default::default()
    };
    app.transfers()
        .reject_tenant_transfer(authed(request, token))
        .await
        .map(|r| r.into_inner().transfer.expect("transfer"))
}

async fn cancel_on(
    client: &TenantTransferServiceClient<Channel>,
    token: &str,
    tenant_id: &str,
    transfer_id: &str,
) -> Result<proto::TenantTransfer, Status> {
    let request = proto::CancelTenantTransferRequest {
        organization_id: tenant_id.into(),
        transfer_id: transfer_id.into(),
        reason: "changed our mind".into(),
        ..Default::default()
    };
    client
        .clone()
        .cancel_tenant_transfer(authed(request, token))
        .await
        .map(|r| r.into_inner().transfer.expect("transfer"))
}

async fn get_transfer(
    app: &TestApp,
    token: &str,
    tenant_id: &str,
    transfer_id: &str,
) -> Result<proto::TenantTransfer, Status> {
    let request = proto::GetTenantTransferRequest {
        organization_id: tenant_id.into(),
        transfer_id: transfer_id.into(),
    };
    app.transfers()
        .get_tenant_transfer(authed(request, token))
        .await
        .map(|r| r.into_inner().transfer.expect("transfer"))
}

async fn list(
    app: &TestApp,
    token: &str,
    request: proto::ListTenantTransfersRequest,
) -> Result<proto::ListTenantTransfersResponse, Status> {
    app.transfers()
        .list_tenant_transfers(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// Ids of the transfers a list answers.
async fn listed(
    app: &TestApp,
    token: &str,
    request: proto::ListTenantTransfersRequest,
) -> Vec<String> {
    list(app, token, request)
        .await
        .expect("list transfers")
        .transfers
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// A client on its own connection, so concurrent calls really run side by side.
fn own_connection(app: &TestApp) -> TenantTransferServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", app.grpc_port))
        .expect("endpoint")
        .connect_lazy();
    TenantTransferServiceClient::new(channel)
}

fn transfer_uuid(id: &str) -> Uuid {
    ids::decode(IdKind::TenantTransfer, id).expect("transfer id")
}

async fn transfer_row(app: &TestApp, id: &str) -> tenant_transfers::Model {
    tenant_transfers::Entity::find_by_id(transfer_uuid(id))
        .one(app.store.db())
        .await
        .expect("read transfer")
        .expect("transfer row")
}

/// The events about a transfer, oldest first: (type, organization, agency).
async fn events_of(app: &TestApp, transfer_id: &str) -> Vec<(String, Uuid, Option<Uuid>)> {
    outbox_events::Entity::find()
        .filter(outbox_events::Column::Payload.contains(transfer_id))
        .order_by_asc(outbox_events::Column::CreateTime)
        .order_by_asc(outbox_events::Column::Id)
        .all(app.store.db())
        .await
        .expect("read events")
        .into_iter()
        .map(|e| (e.event_type, e.organization_id, e.agency_id))
        .collect()
}

fn status_of(transfer: &proto::TenantTransfer) -> proto::TenantTransferStatus {
    transfer.status()
}

fn assert_refused(result: Result<proto::TenantTransfer, Status>, code: Code, why: &str) -> Status {
    let status = result.expect_err(why);
    assert_eq!(status.code(), code, "{why}: {status:?}");
    status
}

/// Agencies A and B (on the team plan: ten tenants each) and tenant T of A.
async fn world(
    app: &TestApp,
) -> (
    proto::Organization,
    proto::Organization,
    proto::Organization,
) {
    let a = agency_on(app, "Alpha Agency", "team").await;
    let b = agency_on(app, "Beta Agency", "team").await;
    let t = tenant(app, "Acme Corp", &a.id).await;
    (a, b, t)
}

async fn an_accepted_transfer_moves_the_tenant_and_keeps_everything_else(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let b_admin = app.token("AGENCY_ADMIN", &b.id);
    let t_admin = app.token("CONFIG_ADMIN", &t.id);
    let agent = register_agent(&app, &t_admin, &t.id, "Receptionist").await;
    gift(&app, &t.id, "25.00").await;
    subscribe(&app, &t.id, "basic").await;
    members::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org_uuid(&t.id)),
        user_id: Set("dana".into()),
        email: Set("dana@acme.example".into()),
        name: Set("Dana".into()),
        role: Set("CONFIG_ADMIN".into()),
        is_owner: Set(false),
        create_time: Set(0),
        update_time: Set(0),
        version: Set(1),
    }
    .insert(app.store.db())
    .await
    .expect("insert member");
    let before = org_row(&app, &t.id).await;
    let balance_before = balance_amount(&app, &t.id).await;
    let sub_before = current(&app, &t.id)
        .await
        .subscription
        .expect("subscription");

    let requested = request(&app, &a_admin, &t.id, &b.id).await;
    assert_eq!(status_of(&requested), proto::TenantTransferStatus::Pending);
    assert_eq!(requested.tenant_organization_id, t.id);
    assert_eq!(requested.source_agency_id, a.id);
    assert_eq!(requested.target_agency_id, b.id);
    assert!(!requested.to_self_managed);
    assert_eq!(requested.note, "the client wants to switch agencies");
    let created = requested.create_time.expect("create time").seconds;
    let expires = requested.expire_time.expect("expire time").seconds;
    assert_eq!(expires - created, 14 * 24 * 3600);
    // Both sides see the pending request.
    for token in [&a_admin, &t_admin, &b_admin, &app.root()] {
        let seen = get_transfer(&app, token, &t.id, &requested.id)
            .await
            .expect("get");
        assert_eq!(status_of(&seen), proto::TenantTransferStatus::Pending);
    }

    let accepted = accept(&app, &b_admin, &t.id, &requested.id)
        .await
        .expect("accept");
    assert_eq!(status_of(&accepted), proto::TenantTransferStatus::Accepted);
    assert_eq!(accepted.decided_by, "user:agency_admin-user");
    assert_eq!(accepted.decision_note, "welcome aboard");
    assert!(accepted.decide_time.is_some());
    assert_ne!(accepted.etag, requested.etag);

    let after = org_row(&app, &t.id).await;
    assert_eq!(after.parent_id, Some(org_uuid(&b.id)));
    assert_eq!(after.version, before.version + 1);
    assert_eq!(
        (
            &after.name,
            &after.slug,
            &after.plan,
            &after.status,
            after.billing_rate_micros
        ),
        (
            &before.name,
            &before.slug,
            &before.plan,
            &before.status,
            before.billing_rate_micros
        )
    );
    assert_eq!(
        agent_row(&app, &agent.id).await.organization_id,
        org_uuid(&t.id)
    );
    assert_eq!(balance_amount(&app, &t.id).await, balance_before);
    let sub_after = current(&app, &t.id)
        .await
        .subscription
        .expect("subscription");
    assert_eq!(
        (sub_after.id, sub_after.plan_id),
        (sub_before.id, sub_before.plan_id)
    );
    let kept = members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_uuid(&t.id)))
        .count(app.store.db())
        .await
        .expect("count members");
    assert_eq!(kept, 1);

    // The relation follows the parent: B manages the tenant now, A no longer does.
    get(&app, &b_admin, &t.id)
        .await
        .expect("the new agency reads its tenant");
    let denied = get(&app, &a_admin, &t.id)
        .await
        .expect_err("the old agency is out");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // The former agency still sees the transfer that took its tenant away.
    get_transfer(&app, &a_admin, &t.id, &requested.id)
        .await
        .expect("the source agency reads the transfer");

    assert_eq!(
        audit_actions(&app, &requested.id).await,
        ["RequestTenantTransfer", "AcceptTenantTransfer"]
    );
    let (a_id, b_id, t_id) = (org_uuid(&a.id), org_uuid(&b.id), org_uuid(&t.id));
    assert_eq!(
        events_of(&app, &requested.id).await,
        [
            ("transfer.requested".to_owned(), t_id, Some(a_id)),
            ("transfer.requested".to_owned(), b_id, None),
            ("transfer.accepted".to_owned(), t_id, Some(b_id)),
            ("transfer.accepted".to_owned(), a_id, None),
        ]
    );
    app.stop().await;
}

async fn a_rejected_transfer_leaves_the_tenant_where_it_was(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let b_admin = app.token("AGENCY_ADMIN", &b.id);
    let transfer = request(&app, &app.token("CONFIG_ADMIN", &t.id), &t.id, &b.id).await;
    let rejected = reject(&app, &b_admin, &t.id, &transfer.id)
        .await
        .expect("reject");
    assert_eq!(status_of(&rejected), proto::TenantTransferStatus::Rejected);
    assert_eq!(rejected.decision_note, "we do not serve this market");
    assert_eq!(org_row(&app, &t.id).await.parent_id, Some(org_uuid(&a.id)));

    for again in [
        reject(&app, &b_admin, &t.id, &transfer.id).await,
        accept(&app, &b_admin, &t.id, &transfer.id).await,
    ] {
        let refused = assert_refused(again, Code::FailedPrecondition, "decided already");
        assert_eq!(reason(&refused), "TRANSFER_NOT_PENDING");
    }
    let (b_id, t_id, a_id) = (org_uuid(&b.id), org_uuid(&t.id), org_uuid(&a.id));
    let events = events_of(&app, &transfer.id).await;
    assert_eq!(
        events[2..],
        [
            ("transfer.rejected".to_owned(), t_id, Some(a_id)),
            ("transfer.rejected".to_owned(), b_id, None),
        ]
    );
    assert_eq!(
        audit_actions(&app, &transfer.id).await,
        ["RequestTenantTransfer", "RejectTenantTransfer"]
    );
    app.stop().await;
}

async fn the_requesters_side_cancels_and_the_target_cannot(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let t_admin = app.token("CONFIG_ADMIN", &t.id);
    let transfer = request(&app, &t_admin, &t.id, &b.id).await;
    let client = app.transfers();
    let refused = cancel_on(
        &client,
        &app.token("AGENCY_ADMIN", &b.id),
        &t.id,
        &transfer.id,
    )
    .await;
    assert_refused(
        refused,
        Code::PermissionDenied,
        "the target rejects, not cancels",
    );

    // The source agency cancels what the tenant asked for.
    let canceled = cancel_on(
        &client,
        &app.token("AGENCY_ADMIN", &a.id),
        &t.id,
        &transfer.id,
    )
    .await
    .expect("cancel");
    assert_eq!(status_of(&canceled), proto::TenantTransferStatus::Canceled);
    assert_eq!(canceled.decision_note, "changed our mind");
    assert_eq!(org_row(&app, &t.id).await.parent_id, Some(org_uuid(&a.id)));
    let types: Vec<String> = events_of(&app, &transfer.id)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        types,
        [
            "transfer.requested",
            "transfer.requested",
            "transfer.canceled",
            "transfer.canceled"
        ]
    );
    // Nothing pending any more: the tenant may ask again.
    request(&app, &t_admin, &t.id, &b.id).await;
    app.stop().await;
}

async fn an_undecided_transfer_shows_and_fails_as_expired(backend: Backend) {
    let clock = FixedClock::new(mid_november());
    let Some(app) = TestApp::spawn_with_clock(backend, Arc::new(clock.clone()), |s| {
        s.events.dispatcher = false;
    })
    .await
    else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let b_admin = app.token("AGENCY_ADMIN", &b.id);
    let first = request(&app, &a_admin, &t.id, &b.id).await;
    clock.set(mid_november() + chrono::Duration::days(15));

    // Shown as expired before anything writes it.
    let seen = get_transfer(&app, &b_admin, &t.id, &first.id)
        .await
        .expect("get");
    assert_eq!(status_of(&seen), proto::TenantTransferStatus::Expired);
    assert_eq!(seen.decide_time, first.expire_time);
    assert_eq!(transfer_row(&app, &first.id).await.status, "PENDING");

    let refused = assert_refused(
        accept(&app, &b_admin, &t.id, &first.id).await,
        Code::FailedPrecondition,
        "expired",
    );
    assert_eq!(reason(&refused), "TRANSFER_EXPIRED");
    // The expiry was committed although the call failed; the tenant did not move.
    assert_eq!(transfer_row(&app, &first.id).await.status, "EXPIRED");
    assert_eq!(org_row(&app, &t.id).await.parent_id, Some(org_uuid(&a.id)));
    assert_eq!(
        audit_actions(&app, &first.id).await,
        ["RequestTenantTransfer", "ExpireTenantTransfer"]
    );
    let types: Vec<String> = events_of(&app, &first.id)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types[2..], ["transfer.expired", "transfer.expired"]);

    // A pending request past its expiry does not block a new one: it is expired first.
    let second = request(&app, &a_admin, &t.id, &b.id).await;
    clock.set(mid_november() + chrono::Duration::days(30));
    let third = request(&app, &a_admin, &t.id, &b.id).await;
    assert_eq!(transfer_row(&app, &second.id).await.status, "EXPIRED");
    assert_eq!(status_of(&third), proto::TenantTransferStatus::Pending);
    app.stop().await;
}

async fn the_dispatcher_expires_undecided_transfers(backend: Backend) {
    let clock = FixedClock::new(mid_november());
    let Some(app) = TestApp::spawn_with_clock(backend, Arc::new(clock.clone()), |s| {
        s.events.poll_interval = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let transfer = request(&app, &app.token("AGENCY_ADMIN", &a.id), &t.id, &b.id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(transfer_row(&app, &transfer.id).await.status, "PENDING");
    clock.set(mid_november() + chrono::Duration::days(14) + chrono::Duration::seconds(1));
    let mut row = transfer_row(&app, &transfer.id).await;
    for _ in 0..200 {
        if row.status != "PENDING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        row = transfer_row(&app, &transfer.id).await;
    }
    assert_eq!(row.status, "EXPIRED");
    assert_eq!(row.decide_time, Some(row.expire_time));
    assert_eq!(row.decided_by, "");
    assert_eq!(
        audit_actions(&app, &transfer.id).await,
        ["RequestTenantTransfer", "ExpireTenantTransfer"]
    );
    let (b_id, t_id, a_id) = (org_uuid(&b.id), org_uuid(&t.id), org_uuid(&a.id));
    assert_eq!(
        events_of(&app, &transfer.id).await[2..],
        [
            ("transfer.expired".to_owned(), t_id, Some(a_id)),
            ("transfer.expired".to_owned(), b_id, None),
        ]
    );
    app.stop().await;
}

async fn only_the_target_agency_or_a_root_admin_decides(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let c = agency_on(&app, "Gamma Agency", "team").await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let b_admin = app.token("AGENCY_ADMIN", &b.id);
    let c_admin = app.token("AGENCY_ADMIN", &c.id);
    let transfer = request(&app, &a_admin, &t.id, &b.id).await;
    let absent = ids::encode(IdKind::TenantTransfer, Uuid::now_v7());

    for (who, token) in [
        ("the source agency", a_admin.clone()),
        ("the tenant's admin", app.token("CONFIG_ADMIN", &t.id)),
        ("a foreign agency", c_admin.clone()),
        (
            "the target's config admin",
            app.token("CONFIG_ADMIN", &b.id),
        ),
        (
            "a root power user",
            app.token("ROOT_POWER_USER", "internal"),
        ),
        ("a system service", app.token("SYSTEM", "")),
    ] {
        let refused = accept(&app, &token, &t.id, &transfer.id).await;
        assert_refused(refused, Code::PermissionDenied, who);
        let refused = reject(&app, &token, &t.id, &transfer.id).await;
        assert_refused(refused, Code::PermissionDenied, who);
    }
    // Ids cannot be probed from outside the tenant's scope...
    for id in ["", "garbage", absent.as_str()] {
        let refused = accept(&app, &b_admin, &t.id, id).await;
        assert_refused(refused, Code::PermissionDenied, "unknown to the target");
        let refused = get_transfer(&app, &c_admin, &t.id, id).await;
        assert_refused(refused, Code::PermissionDenied, "foreign agency");
    }
    let refused = get_transfer(&app, &c_admin, &t.id, &transfer.id).await;
    assert_refused(
        refused,
        Code::PermissionDenied,
        "a foreign agency reads nothing",
    );
    // ...while the tenant's side learns what is wrong with its request.
    let bad = assert_refused(
        accept(&app, &a_admin, &t.id, "").await,
        Code::InvalidArgument,
        "empty id",
    );
    assert_eq!(violations(&bad), ["transfer_id"]);
    assert_refused(
        accept(&app, &a_admin, &t.id, "garbage").await,
        Code::InvalidArgument,
        "bad id",
    );
    assert_refused(
        accept(&app, &a_admin, &t.id, &absent).await,
        Code::NotFound,
        "unknown id",
    );
    // A stale etag is a conflict.
    let stale = proto::AcceptTenantTransferRequest {
        organization_id: t.id.clone(),
        transfer_id: transfer.id.clone(),
        etag: "\"999\"".into(),
        ..Default::default()
    };
    let refused = app
        .transfers()
        .accept_tenant_transfer(authed(stale, &b_admin))
        .await;
    assert_eq!(refused.expect_err("stale etag").code(), Code::Aborted);
    assert_eq!(transfer_row(&app, &transfer.id).await.status, "PENDING");

    // The root admin decides as platform support.
    let accepted = accept(&app, &app.root(), &t.id, &transfer.id)
        .await
        .expect("root accepts");
    assert_eq!(status_of(&accepted), proto::TenantTransferStatus::Accepted);
    assert_eq!(org_row(&app, &t.id).await.parent_id, Some(org_uuid(&b.id)));

    // And the target agency's admin with the etag it read.
    let t2 = tenant(&app, "Bolt Ltd", &a.id).await;
    let second = request(&app, &a_admin, &t2.id, &b.id).await;
    let seen = get_transfer(&app, &b_admin, &t2.id, &second.id)
        .await
        .expect("get");
    let with_etag = proto::AcceptTenantTransferRequest {
        organization_id: t2.id.clone(),
        transfer_id: second.id.clone(),
        etag: seen.etag,
        ..Default::default()
    };
    app.transfers()
        .accept_tenant_transfer(authed(with_etag, &b_admin))
        .await
        .expect("the target agency accepts");
    assert_eq!(org_row(&app, &t2.id).await.parent_id, Some(org_uuid(&b.id)));
    app.stop().await;
}

async fn a_transfer_to_self_managed_needs_a_root_admin(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, _, t) = world(&app).await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let t_admin = app.token("CONFIG_ADMIN", &t.id);
    let to_self = |request_id: &str| proto::RequestTenantTransferRequest {
        organization_id: t.id.clone(),
        to_self_managed: true,
        request_id: request_id.into(),
        ..Default::default()
    };
    let transfer = try_request(&app, &t_admin, to_self("self-1"))
        .await
        .expect("request");
    assert!(transfer.to_self_managed);
    assert_eq!(transfer.target_agency_id, "");
    // Waiting for a root admin: operators find it among all transfers.
    let pending = listed(
        &app,
        &app.token("ROOT_POWER_USER", "internal"),
        proto::ListTenantTransfersRequest {
            status: proto::TenantTransferStatus::Pending as i32,
            filter: "to_self_managed = true".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pending, vec![transfer.id.clone()]);

    for (who, token) in [
        ("the agency", a_admin.clone()),
        (
            "a root power user",
            app.token("ROOT_POWER_USER", "internal"),
        ),
        ("a system service", app.token("SYSTEM", "")),
    ] {
        let refused = assert_refused(
            accept(&app, &token, &t.id, &transfer.id).await,
            Code::PermissionDenied,
            who,
        );
        assert!(refused.message().contains("root admin"), "{refused:?}");
    }
    accept(&app, &app.root(), &t.id, &transfer.id)
        .await
        .expect("root admin accepts");
    assert_eq!(org_row(&app, &t.id).await.parent_id, None);
    let events = events_of(&app, &transfer.id).await;
    assert_eq!(
        events,
        [
            (
                "transfer.requested".to_owned(),
                org_uuid(&t.id),
                Some(org_uuid(&a.id))
            ),
            ("transfer.accepted".to_owned(), org_uuid(&t.id), None),
            ("transfer.accepted".to_owned(), org_uuid(&a.id), None),
        ]
    );

    let refused = assert_refused(
        try_request(&app, &t_admin, to_self("self-2")).await,
        Code::FailedPrecondition,
        "self-managed already",
    );
    assert_eq!(reason(&refused), "ALREADY_SELF_MANAGED");
    app.stop().await;
}

async fn a_tenant_has_one_pending_transfer_and_requests_are_idempotent(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let c = agency_on(&app, "Gamma Agency", "team").await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let first = try_request(&app, &a_admin, to_agency(&t.id, &b.id, "req-1"))
        .await
        .expect("request");
    let retried = try_request(&app, &a_admin, to_agency(&t.id, &b.id, "req-1"))
        .await
        .expect("retry");
    assert_eq!(retried, first);

    let refused = assert_refused(
        try_request(&app, &a_admin, to_agency(&t.id, &c.id, "req-2")).await,
        Code::AlreadyExists,
        "one pending per tenant",
    );
    assert_eq!(reason(&refused), "TRANSFER_PENDING");
    let refused = try_request(
        &app,
        &app.token("CONFIG_ADMIN", &t.id),
        to_agency(&t.id, &b.id, "req-3"),
    )
    .await;
    assert_refused(refused, Code::AlreadyExists, "whoever asks");
    let changed = try_request(&app, &a_admin, to_agency(&t.id, &c.id, "req-1")).await;
    assert_refused(
        changed,
        Code::InvalidArgument,
        "same request id, other arguments",
    );

    let stored = tenant_transfers::Entity::find()
        .filter(tenant_transfers::Column::TenantOrganizationId.eq(org_uuid(&t.id)))
        .count(app.store.db())
        .await
        .expect("count transfers");
    assert_eq!(stored, 1);
    assert_eq!(
        audit_actions(&app, &first.id).await,
        ["RequestTenantTransfer"]
    );
    assert_eq!(events_of(&app, &first.id).await.len(), 2);
    app.stop().await;
}

async fn bad_requests_are_refused_before_anything_is_written(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let both = proto::RequestTenantTransferRequest {
        organization_id: t.id.clone(),
        target_agency_id: b.id.clone(),
        to_self_managed: true,
        note: "x".repeat(1001),
        request_id: String::new(),
    };
    let refused = assert_refused(
        try_request(&app, &a_admin, both).await,
        Code::InvalidArgument,
        "bad fields",
    );
    assert_eq!(
        violations(&refused),
        ["target_agency_id", "note", "request_id"]
    );
    let neither = proto::RequestTenantTransferRequest {
        organization_id: t.id.clone(),
        request_id: "r".into(),
        ..Default::default()
    };
    let refused = assert_refused(
        try_request(&app, &a_admin, neither).await,
        Code::InvalidArgument,
        "no target",
    );
    assert_eq!(violations(&refused), ["target_agency_id"]);

    // Not an agency, or no such organization: NOT_FOUND to a non-operator.
    let other = tenant(&app, "Other Tenant", "").await;
    let absent = ids::encode(IdKind::Organization, Uuid::now_v7());
    for target in [other.id.as_str(), absent.as_str(), "no-such-agency"] {
        let refused =
            try_request(&app, &a_admin, to_agency(&t.id, target, &new_request_id())).await;
        assert_refused(refused, Code::NotFound, target);
    }
    let refused = try_request(
        &app,
        &app.root(),
        to_agency(&t.id, &other.id, &new_request_id()),
    )
    .await;
    let refused = assert_refused(refused, Code::InvalidArgument, "operators learn why");
    assert_eq!(violations(&refused), ["target_agency_id"]);

    let refused = try_request(&app, &a_admin, to_agency(&t.id, &a.id, &new_request_id())).await;
    assert_eq!(
        reason(&assert_refused(refused, Code::FailedPrecondition, "same")),
        "SAME_AGENCY"
    );
    // By slug, too.
    let refused = try_request(&app, &a_admin, to_agency(&t.id, &a.slug, &new_request_id())).await;
    assert_eq!(
        reason(&assert_refused(refused, Code::FailedPrecondition, "same")),
        "SAME_AGENCY"
    );
    let refused = try_request(&app, &a_admin, to_agency(&a.id, &b.id, &new_request_id())).await;
    assert_eq!(
        reason(&assert_refused(refused, Code::FailedPrecondition, "agency")),
        "NOT_A_TENANT"
    );
    // Outside the caller's scope: denied whatever else is wrong.
    let refused = try_request(
        &app,
        &app.token("AGENCY_ADMIN", &b.id),
        to_agency(&t.id, "", ""),
    )
    .await;
    assert_refused(refused, Code::PermissionDenied, "foreign tenant");

    assert_eq!(
        crate::organizations::rows::<tenant_transfers::Entity>(&app).await,
        0
    );
    app.stop().await;
}

async fn concurrent_accept_and_cancel_have_one_winner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, _) = world(&app).await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let b_admin = app.token("AGENCY_ADMIN", &b.id);
    let (left, right) = (own_connection(&app), own_connection(&app));
    for round in 0..4 {
        let t = tenant(&app, &format!("Racer {round}"), &a.id).await;
        let transfer = request(&app, &a_admin, &t.id, &b.id).await;
        let (accepted, canceled) = tokio::join!(
            accept_on(&left, &b_admin, &t.id, &transfer.id),
            cancel_on(&right, &a_admin, &t.id, &transfer.id),
        );
        let row = transfer_row(&app, &transfer.id).await;
        let parent = org_row(&app, &t.id).await.parent_id;
        match (accepted, canceled) {
            (Ok(_), Err(lost)) => {
                // A cancel checked after the accept committed finds the tenant no longer
                // under the requesting agency: PERMISSION_DENIED, like any foreign org.
                assert!(
                    matches!(
                        lost.code(),
                        Code::FailedPrecondition | Code::Aborted | Code::PermissionDenied
                    ),
                    "{lost:?}"
                );
                assert_eq!(row.status, "ACCEPTED");
                assert_eq!(parent, Some(org_uuid(&b.id)));
            }
            (Err(lost), Ok(_)) => {
                assert!(
                    matches!(lost.code(), Code::FailedPrecondition | Code::Aborted),
                    "{lost:?}"
                );
                assert_eq!(row.status, "CANCELED");
                assert_eq!(parent, Some(org_uuid(&a.id)));
            }
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        }
        assert_eq!(row.version, 2);
        assert_eq!(audit_actions(&app, &transfer.id).await.len(), 2);
    }
    app.stop().await;
}

async fn a_full_target_agency_refuses_the_tenant(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let a = agency_on(&app, "Alpha Agency", "team").await;
    // Free allows one tenant per agency, which B has.
    let b = agency_on(&app, "Small Agency", "free").await;
    tenant(&app, "Incumbent", &b.id).await;
    let t = tenant(&app, "Acme Corp", &a.id).await;
    let transfer = request(&app, &app.token("AGENCY_ADMIN", &a.id), &t.id, &b.id).await;
    let before = org_row(&app, &t.id).await;
    let refused = assert_refused(
        accept(&app, &app.token("AGENCY_ADMIN", &b.id), &t.id, &transfer.id).await,
        Code::ResourceExhausted,
        "full",
    );
    assert_eq!(reason(&refused), "PLAN_LIMIT_REACHED");
    assert_eq!(org_row(&app, &t.id).await, before);
    let row = transfer_row(&app, &transfer.id).await;
    assert_eq!((row.status.as_str(), row.version), ("PENDING", 1));
    assert_eq!(
        audit_actions(&app, &transfer.id).await,
        ["RequestTenantTransfer"]
    );
    assert_eq!(events_of(&app, &transfer.id).await.len(), 2);
    app.stop().await;
}

async fn lists_follow_direction_status_filter_and_pages(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t1) = world(&app).await;
    let c = agency_on(&app, "Gamma Agency", "team").await;
    let t2 = tenant(&app, "Bolt Ltd", &b.id).await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let outgoing = request(&app, &a_admin, &t1.id, &b.id).await;
    let incoming = request(&app, &app.token("AGENCY_ADMIN", &b.id), &t2.id, &a.id).await;
    reject(&app, &a_admin, &t2.id, &incoming.id)
        .await
        .expect("reject");
    let of =
        |org: &str, direction: proto::TenantTransferDirection| proto::ListTenantTransfersRequest {
            organization_id: org.into(),
            direction: direction as i32,
            ..Default::default()
        };
    use proto::TenantTransferDirection::{Incoming, Outgoing, Unspecified};

    assert_eq!(
        listed(&app, &a_admin, of(&a.id, Unspecified)).await,
        [incoming.id.clone(), outgoing.id.clone()]
    );
    assert_eq!(
        listed(&app, &a_admin, of(&a.id, Incoming)).await,
        vec![incoming.id.clone()]
    );
    assert_eq!(
        listed(&app, &a_admin, of(&a.id, Outgoing)).await,
        vec![outgoing.id.clone()]
    );
    let pending = proto::ListTenantTransfersRequest {
        status: proto::TenantTransferStatus::Pending as i32,
        ..of(&a.id, Unspecified)
    };
    assert_eq!(
        listed(&app, &a_admin, pending).await,
        vec![outgoing.id.clone()]
    );
    let filtered = proto::ListTenantTransfersRequest {
        filter: format!("status = REJECTED AND tenant_organization_id = {}", t2.id),
        ..of(&a.id, Unspecified)
    };
    assert_eq!(
        listed(&app, &a_admin, filtered).await,
        vec![incoming.id.clone()]
    );
    let t1_admin = app.token("CONFIG_ADMIN", &t1.id);
    assert_eq!(
        listed(&app, &t1_admin, of(&t1.id, Unspecified)).await,
        vec![outgoing.id.clone()]
    );
    assert_eq!(
        listed(&app, &t1_admin, of(&t1.id, Incoming)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(
            &app,
            &app.token("AGENCY_ADMIN", &c.id),
            of(&c.id, Unspecified)
        )
        .await,
        Vec::<String>::new()
    );

    // Operators list everything, page by page, in the order asked for.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &app,
            &app.root(),
            proto::ListTenantTransfersRequest {
                page_size: 1,
                page_token: token.clone(),
                order_by: "create_time asc".into(),
                ..Default::default()
            },
        )
        .await
        .expect("page");
        seen.extend(page.transfers.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, [outgoing.id.clone(), incoming.id.clone()]);

    let foreign = list(
        &app,
        &app.token("AGENCY_ADMIN", &c.id),
        of(&a.id, Unspecified),
    )
    .await;
    assert_eq!(
        foreign.expect_err("foreign agency").code(),
        Code::PermissionDenied
    );
    let everything = list(&app, &a_admin, of("", Unspecified)).await;
    assert_eq!(
        everything.expect_err("not an operator").code(),
        Code::PermissionDenied
    );
    let bad = proto::ListTenantTransfersRequest {
        filter: "status = SIDEWAYS".into(),
        order_by: "name".into(),
        ..of(&a.id, Unspecified)
    };
    let refused = list(&app, &a_admin, bad)
        .await
        .expect_err("bad filter and order");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), ["order_by", "filter"]);
    app.stop().await;
}

async fn deleting_the_tenant_cancels_its_pending_transfer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let transfer = request(&app, &app.token("CONFIG_ADMIN", &t.id), &t.id, &b.id).await;
    app.orgs()
        .delete_organization(authed(
            proto::DeleteOrganizationRequest {
                organization_id: t.id.clone(),
                request_id: new_request_id(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("delete the tenant");
    let row = transfer_row(&app, &transfer.id).await;
    assert_eq!(row.status, "CANCELED");
    assert_eq!(row.decision_note, "the organization was deleted");
    assert!(row.decide_time.is_some());
    let refused = accept(&app, &app.token("AGENCY_ADMIN", &b.id), &t.id, &transfer.id).await;
    assert!(
        matches!(
            refused.as_ref().map_err(Status::code),
            Err(Code::PermissionDenied | Code::NotFound)
        ),
        "a deleted tenant's transfer cannot be accepted: {refused:?}"
    );
    // Both sides hear of the cancellation, which is audited in the tenant.
    let (a_id, b_id, t_id) = (org_uuid(&a.id), org_uuid(&b.id), org_uuid(&t.id));
    let events = events_of(&app, &transfer.id).await;
    assert_eq!(
        events[2..],
        [
            ("transfer.canceled".to_owned(), t_id, Some(a_id)),
            ("transfer.canceled".to_owned(), b_id, None),
        ]
    );
    assert_eq!(
        audit_actions(&app, &transfer.id).await,
        ["RequestTenantTransfer", "CancelTenantTransfer"]
    );
    app.stop().await;
}

async fn delete_org(app: &TestApp, org_id: &str) -> proto::Organization {
    app.orgs()
        .delete_organization(authed(
            proto::DeleteOrganizationRequest {
                organization_id: org_id.into(),
                request_id: new_request_id(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("delete the organization")
        .into_inner()
        .organization
        .expect("organization")
}

async fn deleting_the_target_agency_cancels_the_transfers_aimed_at_it(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let u = tenant(&app, "Umbrella Corp", &a.id).await;
    let a_admin = app.token("AGENCY_ADMIN", &a.id);
    let to_b = request(&app, &a_admin, &t.id, &b.id).await;
    let also_to_b = request(&app, &a_admin, &u.id, &b.id).await;
    delete_org(&app, &b.id).await;
    let (a_id, b_id) = (org_uuid(&a.id), org_uuid(&b.id));
    for (transfer, tenant) in [(&to_b, &t), (&also_to_b, &u)] {
        let row = transfer_row(&app, &transfer.id).await;
        assert_eq!(row.status, "CANCELED");
        assert_eq!(row.decision_note, "the organization was deleted");
        assert_eq!(row.version, 2);
        assert!(row.decide_time.is_some());
        let shown = get_transfer(&app, &a_admin, &tenant.id, &transfer.id)
            .await
            .expect("get");
        assert_eq!(status_of(&shown), proto::TenantTransferStatus::Canceled);
        let events = events_of(&app, &transfer.id).await;
        assert_eq!(
            events[2..],
            [
                (
                    "transfer.canceled".to_owned(),
                    org_uuid(&tenant.id),
                    Some(a_id)
                ),
                ("transfer.canceled".to_owned(), b_id, None),
            ]
        );
        assert_eq!(
            audit_actions(&app, &transfer.id).await,
            ["RequestTenantTransfer", "CancelTenantTransfer"]
        );
        assert_eq!(org_row(&app, &tenant.id).await.parent_id, Some(a_id));
    }
    let deleted = outbox_events::Entity::find()
        .filter(outbox_events::Column::EventType.eq("organization.deleted"))
        .filter(outbox_events::Column::OrganizationId.eq(b_id))
        .one(app.store.db())
        .await
        .expect("read events")
        .expect("organization.deleted");
    let data: serde_json::Value = serde_json::from_str(&deleted.payload).expect("json");
    assert_eq!(data["canceled_tenant_transfers"], 2);
    // Nothing pending any more: the tenants may ask again.
    request(
        &app,
        &a_admin,
        &t.id,
        &agency_on(&app, "Gamma Agency", "team").await.id,
    )
    .await;
    app.stop().await;
}

async fn accepting_after_the_target_agency_was_deactivated_fails(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (a, b, t) = world(&app).await;
    let transfer = request(&app, &app.token("AGENCY_ADMIN", &a.id), &t.id, &b.id).await;
    app.orgs()
        .deactivate_organization(authed(
            proto::DeactivateOrganizationRequest {
                organization_id: b.id.clone(),
                reason: "Non-payment".into(),
                notify_owner: false,
            },
            &app.root(),
        ))
        .await
        .expect("deactivate the target");
    let before = org_row(&app, &t.id).await;
    let refused = assert_refused(
        accept(&app, &app.root(), &t.id, &transfer.id).await,
        Code::FailedPrecondition,
        "inactive target",
    );
    assert_eq!(reason(&refused), "TARGET_AGENCY_INACTIVE");
    let after = org_row(&app, &t.id).await;
    assert_eq!(after.parent_id, Some(org_uuid(&a.id)));
    assert_eq!(after, before);
    let row = transfer_row(&app, &transfer.id).await;
    assert_eq!((row.status.as_str(), row.version), ("PENDING", 1));
    assert_eq!(
        audit_actions(&app, &transfer.id).await,
        ["RequestTenantTransfer"]
    );
    app.stop().await;
}
