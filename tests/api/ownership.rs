//! TransferOwnership and ChangeOwnerEmail: promotion of an existing member, an owner
//! invitation for someone new (completed by AcceptInvitation), removal of the previous
//! owner, etags, scope, idempotency, events and audit.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder,
};
use serde_json::Value;
use tenantry::{
    domain::ids::{self, IdKind},
    proto::{self, MemberRole},
    storage::entities::{email_messages, invitations, members, outbox_events},
};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{audit_actions, org_row, org_uuid},
};

on_both_backends!(
    ownership_passes_to_an_existing_member_who_is_promoted,
    ownership_to_a_new_email_invites_the_owner_until_they_accept,
    the_previous_owner_can_be_removed,
    an_owner_invitation_needs_a_seat_unless_the_previous_owner_leaves,
    stale_etags_the_current_owner_and_bad_requests_are_refused,
    a_config_admin_transfers_its_own_organization_only,
    a_retried_transfer_replays_without_a_second_invitation,
    a_new_transfer_supersedes_a_pending_owner_invitation,
    change_owner_email_updates_the_organization_and_the_owner,
    change_owner_email_follows_a_pending_owner_invitation,
    change_owner_email_refuses_taken_emails_and_ownerless_organizations,
);

const OWNER_EMAIL: &str = "olu@owned.io";
const OWNER_SUB: &str = "owner-olu";

/// A tenant registered by Olu, who owns it, put on the basic plan (three members);
/// returns (org id, Olu's CONFIG_ADMIN token).
async fn owned_org(app: &TestApp, name: &str) -> (String, String) {
    let user = app.token_for("", "", OWNER_SUB, Some(OWNER_EMAIL));
    let org = app
        .orgs()
        .register_organization(authed(
            proto::RegisterOrganizationRequest {
                name: name.into(),
                owner_name: "Olu Owner".into(),
                ..Default::default()
            },
            &user,
        ))
        .await
        .expect("register")
        .into_inner()
        .organization
        .expect("organization")
        .id;
    set_plan(app, &org, "basic").await;
    let admin = app.token_for("CONFIG_ADMIN", &org, OWNER_SUB, Some(OWNER_EMAIL));
    (org, admin)
}

async fn set_plan(app: &TestApp, org: &str, plan: &str) {
    let mut row = org_row(app, org).await.into_active_model();
    row.plan = Set(plan.to_owned());
    row.update(app.store.db()).await.expect("set plan");
}

/// Invites `email` as a MEMBER and accepts as `sub`; returns the member.
async fn join(app: &TestApp, admin: &str, org: &str, email: &str, sub: &str) -> proto::Member {
    let token = app
        .orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.into(),
                email: email.into(),
                role: MemberRole::Member as i32,
                name: "Ada Member".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("invite")
        .into_inner()
        .token;
    accept(app, sub, email, &token).await.expect("accept")
}

async fn accept(
    app: &TestApp,
    sub: &str,
    email: &str,
    token: &str,
) -> Result<proto::Member, tonic::Status> {
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
        .map(|r| r.into_inner().member.expect("member"))
}

fn transfer_request(org: &str, email: &str, request_id: &str) -> proto::TransferOwnershipRequest {
    proto::TransferOwnershipRequest {
        organization_id: org.into(),
        new_owner_email: email.into(),
        new_owner_name: "Nia New".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

async fn transfer(
    app: &TestApp,
    token: &str,
    request: proto::TransferOwnershipRequest,
) -> Result<proto::TransferOwnershipResponse, tonic::Status> {
    app.transfers()
        .transfer_ownership(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn change_email(
    app: &TestApp,
    token: &str,
    org: &str,
    email: &str,
    etag: &str,
) -> Result<proto::ChangeOwnerEmailResponse, tonic::Status> {
    app.transfers()
        .change_owner_email(authed(
            proto::ChangeOwnerEmailRequest {
                organization_id: org.into(),
                new_email: email.into(),
                etag: etag.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn member_by_email(app: &TestApp, org: &str, email: &str) -> Option<members::Model> {
    members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_uuid(org)))
        .filter(members::Column::Email.eq(email))
        .one(app.store.db())
        .await
        .expect("read member")
}

/// The organization's outbox events of `event_type`, oldest first, as data documents.
async fn events(app: &TestApp, org: &str, event_type: &str) -> Vec<Value> {
    outbox_events::Entity::find()
        .filter(outbox_events::Column::OrganizationId.eq(org_uuid(org)))
        .filter(outbox_events::Column::EventType.eq(event_type))
        .order_by_asc(outbox_events::Column::CreateTime)
        .order_by_asc(outbox_events::Column::Id)
        .all(app.store.db())
        .await
        .expect("read events")
        .into_iter()
        .map(|e| serde_json::from_str(&e.payload).expect("event data"))
        .collect()
}

/// A server whose dispatcher is off: the tests read invitation tokens from queued
/// emails, whose bodies the dispatcher clears once they are sent (or logged).
async fn spawn(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |s| s.events.dispatcher = false).await
}

/// The invitation token in the last email queued to `to`.
async fn emailed_token(app: &TestApp, to: &str) -> (email_messages::Model, String) {
    let message = email_messages::Entity::find()
        .filter(email_messages::Column::ToAddress.eq(to))
        .order_by_desc(email_messages::Column::CreateTime)
        .order_by_desc(email_messages::Column::Id)
        .one(app.store.db())
        .await
        .expect("read emails")
        .expect("an email to the new owner");
    let token = message
        .body
        .split_whitespace()
        .find(|w| w.starts_with("ivt_tok_"))
        .expect("token in the body")
        .to_owned();
    (message, token)
}

async fn etag_of(app: &TestApp, org: &str) -> String {
    format!("\"{}\"", org_row(app, org).await.version)
}

async fn ownership_passes_to_an_existing_member_who_is_promoted(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    join(&app, &admin, &org, "ada@acme.io", "user-ada").await;
    let etag = etag_of(&app, &org).await;
    let mut request = transfer_request(&org, "ADA@acme.io", "t-1");
    request.etag = etag.clone();
    let done = transfer(&app, &admin, request).await.expect("transfer");
    assert_eq!(done.organization_id, org);
    assert_eq!(done.previous_owner_user_id, OWNER_SUB);
    assert_eq!(done.new_owner_user_id, "user-ada");
    assert_eq!(done.new_owner_email, "ada@acme.io");
    assert!(!done.new_owner_invited);
    assert!(done.invitation_id.is_empty());
    assert!(!done.previous_owner_removed);
    assert_ne!(done.etag, etag, "the version moves");
    assert_eq!(done.etag, etag_of(&app, &org).await);

    let row = org_row(&app, &org).await;
    assert_eq!(row.owner_user_id, "user-ada");
    assert_eq!(row.owner_email, "ada@acme.io");
    assert_eq!(row.owner_name, "Ada Member");
    let ada = member_by_email(&app, &org, "ada@acme.io")
        .await
        .expect("ada");
    assert!(ada.is_owner);
    assert_eq!(ada.role, "CONFIG_ADMIN");
    let olu = member_by_email(&app, &org, OWNER_EMAIL)
        .await
        .expect("olu stays");
    assert!(!olu.is_owner);
    assert_eq!(olu.role, "CONFIG_ADMIN");
    assert_eq!(
        members::Entity::find()
            .filter(members::Column::OrganizationId.eq(org_uuid(&org)))
            .filter(members::Column::IsOwner.eq(true))
            .count(app.store.db())
            .await
            .expect("count owners"),
        1
    );

    let transferred = events(&app, &org, "ownership.transferred").await;
    assert_eq!(transferred.len(), 1);
    assert_eq!(transferred[0]["organization_id"], org.as_str());
    assert_eq!(transferred[0]["previous_owner_user_id"], OWNER_SUB);
    assert_eq!(transferred[0]["new_owner_user_id"], "user-ada");
    assert_eq!(transferred[0]["new_owner_invited"], false);
    assert!(events(&app, &org, "owner.invited").await.is_empty());
    assert!(
        audit_actions(&app, &org)
            .await
            .contains(&"TransferOwnership".to_owned())
    );
    // The new owner now manages the organization: the old one can be demoted by them.
    let get = app
        .orgs()
        .get_organization(authed(
            proto::GetOrganizationRequest {
                organization_id: org.clone(),
            },
            &admin,
        ))
        .await
        .expect("get")
        .into_inner()
        .organization
        .expect("organization");
    let owner = get.owner.expect("owner");
    assert_eq!(owner.user_id, "user-ada");
    assert_eq!(owner.email, "ada@acme.io");
    app.stop().await;
}

async fn ownership_to_a_new_email_invites_the_owner_until_they_accept(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    let done = transfer(&app, &admin, transfer_request(&org, "Nia@New.io", "t-1"))
        .await
        .expect("transfer");
    assert!(done.new_owner_invited);
    assert!(done.invitation_id.starts_with("ivt_"));
    assert!(done.new_owner_user_id.is_empty());
    assert_eq!(done.new_owner_email, "nia@new.io");
    assert_eq!(done.previous_owner_user_id, OWNER_SUB);

    let row = org_row(&app, &org).await;
    assert_eq!(
        row.owner_user_id, "",
        "no owner until the invitation is accepted"
    );
    assert_eq!(row.owner_email, "nia@new.io");
    assert_eq!(row.owner_name, "Nia New");
    let olu = member_by_email(&app, &org, OWNER_EMAIL).await.expect("olu");
    assert!(!olu.is_owner);
    assert_eq!(olu.role, "CONFIG_ADMIN");
    let invitation = invitations::Entity::find_by_id(
        ids::decode(IdKind::Invitation, &done.invitation_id).expect("invitation id"),
    )
    .one(app.store.db())
    .await
    .expect("read invitation")
    .expect("invitation row");
    assert!(invitation.is_owner);
    assert_eq!(invitation.role, "CONFIG_ADMIN");
    assert_eq!(invitation.status, "PENDING");
    assert_eq!(invitation.email, "nia@new.io");

    let (message, token) = emailed_token(&app, "nia@new.io").await;
    assert_eq!(message.kind, "OWNER_INVITATION");
    assert!(
        message.event_id.is_some(),
        "tied to the owner.invited event"
    );
    let invited = events(&app, &org, "owner.invited").await;
    assert_eq!(invited.len(), 1);
    assert_eq!(invited[0]["invitation_id"], done.invitation_id.as_str());
    let transferred = events(&app, &org, "ownership.transferred").await;
    assert_eq!(transferred.len(), 1);
    assert_eq!(transferred[0]["new_owner_invited"], true);
    assert_eq!(transferred[0]["new_owner_email"], "nia@new.io");
    assert!(
        !transferred[0].to_string().contains("ivt_tok_"),
        "no token in events"
    );
    let entries = tenantry::storage::entities::audit_entries::Entity::find()
        .filter(tenantry::storage::entities::audit_entries::Column::Action.eq("TransferOwnership"))
        .all(app.store.db())
        .await
        .expect("audit");
    assert_eq!(entries.len(), 1);
    assert!(
        !format!("{entries:?}").contains("ivt_tok_"),
        "no token in audit"
    );

    let member = accept(&app, "user-nia", "nia@new.io", &token)
        .await
        .expect("accept the owner invitation");
    assert!(member.owner);
    assert_eq!(member.role, MemberRole::ConfigAdmin as i32);
    assert_eq!(member.name, "Nia New");
    let row = org_row(&app, &org).await;
    assert_eq!(row.owner_user_id, "user-nia");
    assert_eq!(row.owner_email, "nia@new.io");
    let owners = members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_uuid(&org)))
        .filter(members::Column::IsOwner.eq(true))
        .all(app.store.db())
        .await
        .expect("owners");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].user_id, "user-nia");
    let joined = events(&app, &org, "member.joined").await;
    assert_eq!(joined.last().expect("member.joined")["user_id"], "user-nia");
    assert_eq!(joined.last().expect("member.joined")["owner"], true);
    let transferred = events(&app, &org, "ownership.transferred").await;
    assert_eq!(
        transferred.len(),
        2,
        "the acceptance completes the handover"
    );
    assert_eq!(transferred[1]["new_owner_user_id"], "user-nia");
    app.stop().await;
}

async fn the_previous_owner_can_be_removed(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    join(&app, &admin, &org, "ada@acme.io", "user-ada").await;
    let mut request = transfer_request(&org, "ada@acme.io", "t-1");
    request.remove_previous_owner = true;
    let done = transfer(&app, &app.root(), request)
        .await
        .expect("transfer");
    assert!(done.previous_owner_removed);
    assert_eq!(done.previous_owner_user_id, OWNER_SUB);
    assert!(member_by_email(&app, &org, OWNER_EMAIL).await.is_none());
    let ada = member_by_email(&app, &org, "ada@acme.io")
        .await
        .expect("ada");
    assert!(ada.is_owner);
    assert_eq!(events(&app, &org, "member.removed").await.len(), 1);
    let transferred = events(&app, &org, "ownership.transferred").await;
    assert_eq!(transferred[0]["previous_owner_removed"], true);
    app.stop().await;
}

async fn an_owner_invitation_needs_a_seat_unless_the_previous_owner_leaves(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    // The free plan has one seat, which the owner takes.
    set_plan(&app, &org, "free").await;
    let refused = transfer(&app, &admin, transfer_request(&org, "nia@new.io", "t-1"))
        .await
        .expect_err("no seat for the invitee");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "PLAN_LIMIT_REACHED");
    let row = org_row(&app, &org).await;
    assert_eq!(row.owner_user_id, OWNER_SUB, "nothing changed");
    assert!(
        member_by_email(&app, &org, OWNER_EMAIL)
            .await
            .expect("olu")
            .is_owner
    );
    assert_eq!(
        invitations::Entity::find()
            .count(app.store.db())
            .await
            .expect("count"),
        0
    );

    let mut request = transfer_request(&org, "nia@new.io", "t-2");
    request.remove_previous_owner = true;
    let done = transfer(&app, &admin, request)
        .await
        .expect("the previous owner's seat frees up");
    assert!(done.new_owner_invited && done.previous_owner_removed);
    let (_, token) = emailed_token(&app, "nia@new.io").await;
    let member = accept(&app, "user-nia", "nia@new.io", &token)
        .await
        .expect("accept");
    assert!(member.owner);
    app.stop().await;
}

async fn stale_etags_the_current_owner_and_bad_requests_are_refused(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    join(&app, &admin, &org, "ada@acme.io", "user-ada").await;
    let before = org_row(&app, &org).await;

    let mut stale = transfer_request(&org, "ada@acme.io", "t-1");
    stale.etag = format!("\"{}\"", before.version - 1);
    let refused = transfer(&app, &admin, stale).await.expect_err("stale");
    assert_eq!(refused.code(), Code::Aborted);

    let refused = transfer(&app, &admin, transfer_request(&org, "OLU@owned.io", "t-2"))
        .await
        .expect_err("already the owner");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "ALREADY_OWNER");

    let refused = transfer(
        &app,
        &admin,
        proto::TransferOwnershipRequest {
            organization_id: org.clone(),
            new_owner_email: "not an email".into(),
            new_owner_name: "x".repeat(201),
            ..Default::default()
        },
    )
    .await
    .expect_err("bad request");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(fields, ["new_owner_email", "new_owner_name", "request_id"]);

    let after = org_row(&app, &org).await;
    assert_eq!(after, before, "nothing changed");
    assert!(events(&app, &org, "ownership.transferred").await.is_empty());
    app.stop().await;
}

async fn a_config_admin_transfers_its_own_organization_only(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, _) = owned_org(&app, "Acme").await;
    let other =
        crate::organizations::create(&app, &app.root(), crate::organizations::named("Other"))
            .await
            .id;
    let foreign_admin = app.token("CONFIG_ADMIN", &other);
    let refused = transfer(
        &app,
        &foreign_admin,
        transfer_request(&org, "x@y.io", "t-1"),
    )
    .await
    .expect_err("another organization");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let member = app.token("MEMBER", &org);
    let refused = transfer(&app, &member, transfer_request(&org, "x@y.io", "t-2"))
        .await
        .expect_err("members may not");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = change_email(&app, &foreign_admin, &org, "x@y.io", "")
        .await
        .expect_err("another organization");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Its own organization: a second CONFIG_ADMIN (not the owner) may hand it over.
    let own_admin = app.token("CONFIG_ADMIN", &other);
    let done = transfer(
        &app,
        &own_admin,
        transfer_request(&other, "boss@other.io", "t-3"),
    )
    .await
    .expect("own organization");
    assert!(done.new_owner_invited);
    assert!(done.previous_owner_user_id.is_empty(), "it had no owner");
    app.stop().await;
}

async fn a_retried_transfer_replays_without_a_second_invitation(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    let first = transfer(&app, &admin, transfer_request(&org, "nia@new.io", "t-1"))
        .await
        .expect("transfer");
    let again = transfer(&app, &admin, transfer_request(&org, "nia@new.io", "t-1"))
        .await
        .expect("replay");
    assert_eq!(first, again);
    assert_eq!(
        invitations::Entity::find()
            .count(app.store.db())
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        email_messages::Entity::find()
            .filter(email_messages::Column::ToAddress.eq("nia@new.io"))
            .count(app.store.db())
            .await
            .expect("count"),
        1
    );
    assert_eq!(events(&app, &org, "ownership.transferred").await.len(), 1);
    app.stop().await;
}

async fn a_new_transfer_supersedes_a_pending_owner_invitation(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    join(&app, &admin, &org, "ada@acme.io", "user-ada").await;
    transfer(&app, &admin, transfer_request(&org, "nia@new.io", "t-1"))
        .await
        .expect("invite nia");
    let (_, token) = emailed_token(&app, "nia@new.io").await;
    let done = transfer(&app, &admin, transfer_request(&org, "ada@acme.io", "t-2"))
        .await
        .expect("to ada instead");
    assert!(done.previous_owner_user_id.is_empty(), "nia never accepted");
    assert_eq!(done.new_owner_user_id, "user-ada");
    let refused = accept(&app, "user-nia", "nia@new.io", &token)
        .await
        .expect_err("the invitation was revoked");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let row = org_row(&app, &org).await;
    assert_eq!(row.owner_user_id, "user-ada");
    assert_eq!(row.owner_email, "ada@acme.io");
    app.stop().await;
}

async fn change_owner_email_updates_the_organization_and_the_owner(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    let etag = etag_of(&app, &org).await;
    let changed = change_email(&app, &admin, &org, "Olu@Elsewhere.io", &etag)
        .await
        .expect("change");
    assert_eq!(changed.organization_id, org);
    assert_eq!(changed.owner_user_id, OWNER_SUB);
    assert_eq!(changed.previous_email, OWNER_EMAIL);
    assert_eq!(changed.new_email, "olu@elsewhere.io");
    assert_eq!(changed.etag, etag_of(&app, &org).await);
    assert_ne!(changed.etag, etag);
    let row = org_row(&app, &org).await;
    assert_eq!(row.owner_email, "olu@elsewhere.io");
    assert_eq!(row.owner_user_id, OWNER_SUB);
    let olu = member_by_email(&app, &org, "olu@elsewhere.io")
        .await
        .expect("the membership follows");
    assert!(olu.is_owner);
    let updated = events(&app, &org, "organization.updated").await;
    let last = updated.last().expect("organization.updated");
    assert_eq!(last["changed_fields"], serde_json::json!(["owner_email"]));
    assert!(
        audit_actions(&app, &org)
            .await
            .contains(&"ChangeOwnerEmail".to_owned())
    );
    let stale = change_email(&app, &admin, &org, "olu@third.io", &etag)
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    let bad = change_email(&app, &admin, &org, "nope", "")
        .await
        .expect_err("bad email");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad), ["new_email"]);
    app.stop().await;
}

async fn change_owner_email_follows_a_pending_owner_invitation(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    let done = transfer(&app, &admin, transfer_request(&org, "nia@new.io", "t-1"))
        .await
        .expect("transfer");
    let (_, token) = emailed_token(&app, "nia@new.io").await;
    let changed = change_email(&app, &admin, &org, "nia@work.io", "")
        .await
        .expect("change");
    assert_eq!(changed.previous_email, "nia@new.io");
    assert!(changed.owner_user_id.is_empty());
    let invitation = invitations::Entity::find_by_id(
        ids::decode(IdKind::Invitation, &done.invitation_id).expect("id"),
    )
    .one(app.store.db())
    .await
    .expect("read")
    .expect("invitation");
    assert_eq!(invitation.email, "nia@work.io");
    assert_eq!(invitation.status, "PENDING");
    let member = accept(&app, "user-nia", "nia@work.io", &token)
        .await
        .expect("accept at the new address");
    assert!(member.owner);
    assert_eq!(member.email, "nia@work.io");
    assert_eq!(org_row(&app, &org).await.owner_user_id, "user-nia");
    app.stop().await;
}

async fn change_owner_email_refuses_taken_emails_and_ownerless_organizations(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_org(&app, "Acme").await;
    join(&app, &admin, &org, "ada@acme.io", "user-ada").await;
    let taken = change_email(&app, &admin, &org, "ada@acme.io", "")
        .await
        .expect_err("ada's address");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(org_row(&app, &org).await.owner_email, OWNER_EMAIL);

    let ownerless =
        crate::organizations::create(&app, &app.root(), crate::organizations::named("Nobody"))
            .await
            .id;
    let missing = change_email(&app, &app.root(), &ownerless, "x@y.io", "")
        .await
        .expect_err("no owner");
    assert_eq!(missing.code(), Code::FailedPrecondition);
    assert_eq!(reason(&missing), "OWNER_MISSING");
    app.stop().await;
}
