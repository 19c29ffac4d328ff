//! Members and invitations: invite, accept, owner invitations, expiry, revocation, role
//! changes, removal and concurrent acceptance.

use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter,
};
use tenantry::{
    auth::api_key,
    proto::{self, MemberRole},
    storage::entities::{idempotency_records, invitations, members, organizations},
};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
};

on_both_backends!(
    an_invited_member_accepts_and_is_listed_with_the_role,
    the_owner_invitation_of_create_organization_makes_the_owner,
    re_inviting_a_pending_owner_reissues_the_owner_invitation,
    an_expired_invitation_is_refused,
    a_revoked_or_replaced_invitation_is_refused,
    accepting_checks_the_token_and_the_callers_email,
    inviting_an_existing_member_fails,
    bad_invitations_name_every_field_and_write_nothing,
    invitation_tokens_are_stored_only_as_hashes,
    role_changes_follow_the_rules,
    the_owner_cannot_be_removed_but_members_can,
    concurrent_accepts_create_one_member,
);

/// A tenant created by the root admin; returns its id.
async fn tenant(app: &TestApp, name: &str) -> String {
    app.orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: name.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create tenant")
        .into_inner()
        .organization
        .expect("organization")
        .id
}

/// A tenant registered by a user, who becomes its owner, then put on the basic plan
/// (three members; a registered tenant starts on free, whose one seat the owner takes)
/// the way a subscription sets it; returns (org id, owner token).
async fn owned_tenant(app: &TestApp, name: &str, owner_email: &str) -> (String, String) {
    // One user per owner email: a free account owns one organization.
    let sub = format!("owner:{owner_email}");
    let user = app.token_for("", "", &sub, Some(owner_email));
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
    let mut row = crate::organizations::org_row(app, &org)
        .await
        .into_active_model();
    row.plan = Set("basic".to_owned());
    row.update(app.store.db()).await.expect("basic plan");
    let admin = app.token_for("CONFIG_ADMIN", &org, &sub, Some(owner_email));
    (org, admin)
}

fn invite_request(org: &str, email: &str, role: MemberRole) -> proto::InviteMemberRequest {
    proto::InviteMemberRequest {
        organization_id: org.into(),
        email: email.into(),
        role: role as i32,
        name: "Invitee".into(),
        ..Default::default()
    }
}

async fn invite(
    app: &TestApp,
    admin: &str,
    org: &str,
    email: &str,
    role: MemberRole,
) -> proto::InviteMemberResponse {
    app.orgs()
        .invite_member(authed(invite_request(org, email, role), admin))
        .await
        .expect("invite")
        .into_inner()
}

async fn accept(app: &TestApp, user: &str, token: &str) -> Result<proto::Member, tonic::Status> {
    app.orgs()
        .accept_invitation(authed(
            proto::AcceptInvitationRequest {
                token: token.into(),
                name: String::new(),
            },
            user,
        ))
        .await
        .map(|r| r.into_inner().member.expect("member"))
}

async fn member_rows(app: &TestApp, email: &str) -> u64 {
    members::Entity::find()
        .filter(members::Column::Email.eq(email))
        .count(app.store.db())
        .await
        .expect("count members")
}

async fn an_invited_member_accepts_and_is_listed_with_the_role(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let invited = invite(&app, &admin, &org, "Ada@Example.com", MemberRole::Member).await;
    let invitation = invited.invitation.expect("invitation");
    assert!(invited.token.starts_with("ivt_tok_"));
    assert!(invitation.id.starts_with("ivt_"));
    assert_eq!(invitation.email, "ada@example.com");
    assert_eq!(invitation.status, proto::InvitationStatus::Pending as i32);

    let ada = app.token_for("", "", "user-ada", Some("ADA@example.com"));
    let member = accept(&app, &ada, &invited.token).await.expect("accept");
    assert!(member.id.starts_with("mem_"));
    assert_eq!(member.organization_id, org);
    assert_eq!(member.user_id, "user-ada");
    assert_eq!(member.email, "ada@example.com");
    assert_eq!(member.name, "Invitee");
    assert_eq!(member.role, MemberRole::Member as i32);
    assert!(!member.owner);

    let reader = app.token("MEMBER", &org);
    let listed = app
        .orgs()
        .list_members(authed(
            proto::ListMembersRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
            &reader,
        ))
        .await
        .expect("list members")
        .into_inner();
    assert_eq!(listed.members.len(), 1);
    assert_eq!(listed.members[0].id, member.id);
    assert_eq!(listed.members[0].role, MemberRole::Member as i32);

    let invitations = app
        .orgs()
        .list_invitations(authed(
            proto::ListInvitationsRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("list invitations")
        .into_inner()
        .invitations;
    assert_eq!(invitations.len(), 1);
    assert_eq!(
        invitations[0].status,
        proto::InvitationStatus::Accepted as i32
    );
    let row = invitations::Entity::find()
        .one(app.store.db())
        .await
        .expect("read")
        .expect("invitation row");
    assert_eq!(row.status, "ACCEPTED");
    assert!(row.accept_time.is_some());
    app.stop().await;
}

async fn the_owner_invitation_of_create_organization_makes_the_owner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let created = app
        .orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: "Owned".into(),
                    ..Default::default()
                }),
                owner: Some(proto::OwnerInvite {
                    email: "owner@owned.io".into(),
                    first_name: "Ola".into(),
                    last_name: "Owner".into(),
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create with owner")
        .into_inner();
    let org = created.organization.expect("organization");
    assert!(created.owner_invitation.expect("owner invitation").owner);
    let owner = app.token_for("", "", "owner-sub", Some("owner@owned.io"));
    let member = accept(&app, &owner, &created.owner_invitation_token)
        .await
        .expect("accept owner invitation");
    assert!(member.owner);
    assert_eq!(member.role, MemberRole::ConfigAdmin as i32);
    assert_eq!(member.name, "Ola Owner");

    let fetched = app
        .orgs()
        .get_organization(authed(
            proto::GetOrganizationRequest {
                organization_id: org.id.clone(),
            },
            &app.root(),
        ))
        .await
        .expect("get")
        .into_inner()
        .organization
        .expect("organization");
    let owner = fetched.owner.expect("owner");
    assert_eq!(owner.user_id, "owner-sub");
    assert_eq!(owner.email, "owner@owned.io");
    assert_ne!(
        fetched.etag, org.etag,
        "accepting the owner invitation bumps the version"
    );
    app.stop().await;
}

async fn an_expired_invitation_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.invitation_ttl = Duration::ZERO).await
    else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let invited = invite(&app, &admin, &org, "late@example.com", MemberRole::Member).await;
    assert_eq!(
        invited.invitation.expect("invitation").status,
        proto::InvitationStatus::Expired as i32
    );
    let user = app.token_for("", "", "late", Some("late@example.com"));
    let refused = accept(&app, &user, &invited.token)
        .await
        .expect_err("expired");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "INVITATION_EXPIRED");
    assert_eq!(member_rows(&app, "late@example.com").await, 0);
    let revoke = app
        .orgs()
        .revoke_invitation(authed(
            proto::RevokeInvitationRequest {
                organization_id: org.clone(),
                invitation_id: invitations::Entity::find()
                    .one(app.store.db())
                    .await
                    .expect("read")
                    .map(|r| {
                        tenantry::domain::ids::encode(
                            tenantry::domain::ids::IdKind::Invitation,
                            r.id,
                        )
                    })
                    .expect("row"),
            },
            &admin,
        ))
        .await
        .expect_err("an expired invitation is not pending");
    assert_eq!(revoke.code(), Code::FailedPrecondition);
    assert_eq!(reason(&revoke), "INVITATION_EXPIRED");
    app.stop().await;
}

async fn a_revoked_or_replaced_invitation_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let user = app.token_for("", "", "bo", Some("bo@example.com"));

    let first = invite(&app, &admin, &org, "bo@example.com", MemberRole::Member).await;
    let second = invite(
        &app,
        &admin,
        &org,
        "bo@example.com",
        MemberRole::ConfigAdmin,
    )
    .await;
    let replaced = accept(&app, &user, &first.token)
        .await
        .expect_err("replaced");
    assert_eq!(replaced.code(), Code::FailedPrecondition);
    assert_eq!(reason(&replaced), "INVITATION_REVOKED");

    let second_id = second.invitation.expect("invitation").id;
    let revoked = app
        .orgs()
        .revoke_invitation(authed(
            proto::RevokeInvitationRequest {
                organization_id: org.clone(),
                invitation_id: second_id.clone(),
            },
            &admin,
        ))
        .await
        .expect("revoke")
        .into_inner()
        .invitation
        .expect("invitation");
    assert_eq!(revoked.status, proto::InvitationStatus::Revoked as i32);
    let refused = accept(&app, &user, &second.token)
        .await
        .expect_err("revoked");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "INVITATION_REVOKED");
    let again = app
        .orgs()
        .revoke_invitation(authed(
            proto::RevokeInvitationRequest {
                organization_id: org.clone(),
                invitation_id: second_id.clone(),
            },
            &admin,
        ))
        .await
        .expect_err("only pending invitations can be revoked");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "INVITATION_REVOKED");
    let bad_id = app
        .orgs()
        .revoke_invitation(authed(
            proto::RevokeInvitationRequest {
                organization_id: org.clone(),
                invitation_id: "nope".into(),
            },
            &admin,
        ))
        .await
        .expect_err("bad id");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad_id), vec!["invitation_id"]);
    let other = tenant(&app, "Other").await;
    let foreign = app
        .orgs()
        .revoke_invitation(authed(
            proto::RevokeInvitationRequest {
                organization_id: other.clone(),
                invitation_id: second_id,
            },
            &app.token("CONFIG_ADMIN", &other),
        ))
        .await
        .expect_err("another org's invitation");
    assert_eq!(foreign.code(), Code::NotFound);

    let statuses: Vec<String> = invitations::Entity::find()
        .all(app.store.db())
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.iter().all(|s| s == "REVOKED"), "{statuses:?}");
    assert_eq!(member_rows(&app, "bo@example.com").await, 0);
    app.stop().await;
}

async fn accepting_checks_the_token_and_the_callers_email(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let invited = invite(&app, &admin, &org, "cy@example.com", MemberRole::Member).await;

    let stranger = app.token_for("", "", "stranger", Some("someone@else.com"));
    let unknown = accept(&app, &stranger, "ivt_tok_not-a-real-token")
        .await
        .expect_err("unknown token");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "INVITATION_NOT_FOUND");
    let empty = accept(&app, &stranger, "").await.expect_err("empty token");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(violations(&empty), vec!["token"]);
    let wrong_email = accept(&app, &stranger, &invited.token)
        .await
        .expect_err("another email");
    assert_eq!(wrong_email.code(), Code::PermissionDenied);
    let key = app
        .orgs()
        .regenerate_api_key(authed(
            proto::RegenerateApiKeyRequest {
                organization_id: org.clone(),
            },
            &admin,
        ))
        .await
        .expect("api key")
        .into_inner()
        .api_key;
    let by_key = accept(&app, &key, &invited.token)
        .await
        .expect_err("API keys cannot accept");
    assert_eq!(by_key.code(), Code::PermissionDenied);
    assert_eq!(member_rows(&app, "cy@example.com").await, 0);

    // A token without an email claim may accept; the invitation's email is used.
    let no_claim = app.token_for("", "", "cy", None);
    let member = accept(&app, &no_claim, &invited.token)
        .await
        .expect("accept");
    assert_eq!(member.email, "cy@example.com");
    let twice = accept(&app, &no_claim, &invited.token)
        .await
        .expect_err("twice");
    assert_eq!(twice.code(), Code::FailedPrecondition);
    assert_eq!(reason(&twice), "INVITATION_ALREADY_ACCEPTED");
    assert_eq!(member_rows(&app, "cy@example.com").await, 1);
    app.stop().await;
}

async fn inviting_an_existing_member_fails(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_tenant(&app, "Acme", "owner@acme.io").await;
    let exists = app
        .orgs()
        .invite_member(authed(
            invite_request(&org, "OWNER@acme.io", MemberRole::Member),
            &admin,
        ))
        .await
        .expect_err("already a member");
    assert_eq!(exists.code(), Code::AlreadyExists);
    assert_eq!(reason(&exists), "MEMBER_EXISTS");
    assert_eq!(
        invitations::Entity::find()
            .count(app.store.db())
            .await
            .expect("count"),
        0
    );
    app.stop().await;
}

async fn bad_invitations_name_every_field_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let mut request = invite_request(&org, "not-an-email", MemberRole::Unspecified);
    request.name = "x".repeat(201);
    let bad = app
        .orgs()
        .invite_member(authed(request, &admin))
        .await
        .expect_err("bad input");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad), vec!["email", "role", "name"]);
    let wrong_kind = app
        .orgs()
        .invite_member(authed(
            invite_request(&org, "a@example.com", MemberRole::AgencyAdmin),
            &admin,
        ))
        .await
        .expect_err("agency role in a tenant");
    assert_eq!(wrong_kind.code(), Code::InvalidArgument);
    assert_eq!(violations(&wrong_kind), vec!["role"]);
    let as_member = app
        .orgs()
        .invite_member(authed(
            invite_request(&org, "a@example.com", MemberRole::Member),
            &app.token("MEMBER", &org),
        ))
        .await
        .expect_err("members cannot invite");
    assert_eq!(as_member.code(), Code::PermissionDenied);
    assert_eq!(
        invitations::Entity::find()
            .count(app.store.db())
            .await
            .expect("count"),
        0
    );
    app.stop().await;
}

async fn invitation_tokens_are_stored_only_as_hashes(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let mut request = invite_request(&org, "di@example.com", MemberRole::Member);
    request.request_id = "invite-di-1".into();
    let first = app
        .orgs()
        .invite_member(authed(request.clone(), &admin))
        .await
        .expect("invite")
        .into_inner();
    let row = invitations::Entity::find()
        .one(app.store.db())
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.token_hash, api_key::hash(&first.token));
    for record in idempotency_records::Entity::find()
        .all(app.store.db())
        .await
        .expect("read")
    {
        let stored = String::from_utf8_lossy(&record.response);
        assert!(
            !stored.contains(&first.token),
            "the token must not be stored in clear"
        );
    }
    // A retry returns the same invitation with a fresh token; the first token stops working.
    let retry = app
        .orgs()
        .invite_member(authed(request, &admin))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        retry.invitation.as_ref().map(|i| &i.id),
        first.invitation.as_ref().map(|i| &i.id)
    );
    assert!(retry.token.starts_with("ivt_tok_"));
    assert_ne!(retry.token, first.token);
    assert_eq!(
        invitations::Entity::find()
            .count(app.store.db())
            .await
            .expect("count"),
        1
    );
    let user = app.token_for("", "", "di", Some("di@example.com"));
    let stale = accept(&app, &user, &first.token)
        .await
        .expect_err("replaced token");
    assert_eq!(reason(&stale), "INVITATION_NOT_FOUND");
    accept(&app, &user, &retry.token)
        .await
        .expect("fresh token works");
    app.stop().await;
}

async fn role_changes_follow_the_rules(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_tenant(&app, "Acme", "owner@acme.io").await;
    let invited = invite(&app, &admin, &org, "ed@example.com", MemberRole::Member).await;
    let ed = accept(
        &app,
        &app.token_for("", "", "ed", Some("ed@example.com")),
        &invited.token,
    )
    .await
    .expect("accept");
    let update = |member_id: &str, role: MemberRole, etag: &str| {
        let request = authed(
            proto::UpdateMemberRoleRequest {
                organization_id: org.clone(),
                member_id: member_id.into(),
                role: role as i32,
                etag: etag.into(),
            },
            &admin,
        );
        let mut client = app.orgs();
        async move {
            client
                .update_member_role(request)
                .await
                .map(|r| r.into_inner().member.expect("member"))
        }
    };

    let promoted = update(&ed.id, MemberRole::ConfigAdmin, &ed.etag)
        .await
        .expect("promote");
    assert_eq!(promoted.role, MemberRole::ConfigAdmin as i32);
    assert_ne!(promoted.etag, ed.etag);
    let stale = update(&ed.id, MemberRole::Member, &ed.etag)
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    let unspecified = update(&ed.id, MemberRole::Unspecified, "")
        .await
        .expect_err("unspecified");
    assert_eq!(unspecified.code(), Code::InvalidArgument);
    assert_eq!(violations(&unspecified), vec!["role"]);
    let root_role = update(&ed.id, MemberRole::RootAdmin, "")
        .await
        .expect_err("root role in a tenant");
    assert_eq!(root_role.code(), Code::InvalidArgument);
    let bad_id = update("mem_nope", MemberRole::Member, "")
        .await
        .expect_err("bad id");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad_id), vec!["member_id"]);

    let owner_row = members::Entity::find()
        .filter(members::Column::IsOwner.eq(true))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("owner");
    let owner_id =
        tenantry::domain::ids::encode(tenantry::domain::ids::IdKind::Member, owner_row.id);
    let demote = update(&owner_id, MemberRole::Member, "")
        .await
        .expect_err("owner must stay admin");
    assert_eq!(demote.code(), Code::FailedPrecondition);
    assert_eq!(reason(&demote), "OWNER_MUST_BE_ADMIN");

    let (other, other_admin) = owned_tenant(&app, "Other", "owner@other.io").await;
    let foreign = app
        .orgs()
        .update_member_role(authed(
            proto::UpdateMemberRoleRequest {
                organization_id: other,
                member_id: ed.id.clone(),
                role: MemberRole::Member as i32,
                etag: String::new(),
            },
            &other_admin,
        ))
        .await
        .expect_err("a member of another org");
    assert_eq!(foreign.code(), Code::NotFound);
    let stored = members::Entity::find()
        .filter(members::Column::Email.eq("ed@example.com"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("ed");
    assert_eq!(stored.role, "CONFIG_ADMIN");
    let owner_row = members::Entity::find_by_id(owner_row.id)
        .one(app.store.db())
        .await
        .expect("read")
        .expect("owner");
    assert_eq!(owner_row.role, "CONFIG_ADMIN");
    app.stop().await;
}

async fn the_owner_cannot_be_removed_but_members_can(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (org, admin) = owned_tenant(&app, "Acme", "owner@acme.io").await;
    let invited = invite(&app, &admin, &org, "fy@example.com", MemberRole::Member).await;
    let fy = accept(
        &app,
        &app.token_for("", "", "fy", Some("fy@example.com")),
        &invited.token,
    )
    .await
    .expect("accept");
    let remove = |member_id: String| {
        let request = authed(
            proto::RemoveMemberRequest {
                organization_id: org.clone(),
                member_id,
            },
            &admin,
        );
        let mut client = app.orgs();
        async move { client.remove_member(request).await }
    };
    let owner_row = members::Entity::find()
        .filter(members::Column::IsOwner.eq(true))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("owner");
    let refused = remove(tenantry::domain::ids::encode(
        tenantry::domain::ids::IdKind::Member,
        owner_row.id,
    ))
    .await
    .expect_err("owner");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "OWNER_CANNOT_BE_REMOVED");
    let bad = remove("agt_01h455vb4pex5vsknk084sn02q".into())
        .await
        .expect_err("not a member id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad), vec!["member_id"]);
    owned_tenant(&app, "Other", "owner@other.io").await;
    let other_owner = members::Entity::find()
        .filter(members::Column::Email.eq("owner@other.io"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("other owner");
    let foreign = remove(tenantry::domain::ids::encode(
        tenantry::domain::ids::IdKind::Member,
        other_owner.id,
    ))
    .await
    .expect_err("another org's member");
    assert_eq!(foreign.code(), Code::NotFound);

    remove(fy.id.clone()).await.expect("remove member");
    assert_eq!(member_rows(&app, "fy@example.com").await, 0);
    assert_eq!(member_rows(&app, "owner@acme.io").await, 1);
    let gone = remove(fy.id).await.expect_err("already removed");
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}

async fn concurrent_accepts_create_one_member(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let invited = invite(&app, &admin, &org, "gi@example.com", MemberRole::Member).await;
    let user = app.token_for("", "", "gi", Some("gi@example.com"));
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let request = authed(
                proto::AcceptInvitationRequest {
                    token: invited.token.clone(),
                    name: String::new(),
                },
                &user,
            );
            let mut client = app.orgs();
            tokio::spawn(async move { client.accept_invitation(request).await })
        })
        .collect();
    let mut accepted = 0;
    for attempt in attempts {
        match attempt.await.expect("join") {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status), "INVITATION_ALREADY_ACCEPTED");
            }
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(member_rows(&app, "gi@example.com").await, 1);
    let org_row = organizations::Entity::find()
        .filter(organizations::Column::Name.eq("Acme"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("org");
    assert_eq!(
        org_row.owner_user_id, "",
        "a plain invitation does not make an owner"
    );
    app.stop().await;
}

async fn re_inviting_a_pending_owner_reissues_the_owner_invitation(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let created = app
        .orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: "Owned".into(),
                    ..Default::default()
                }),
                owner: Some(proto::OwnerInvite {
                    email: "owner@owned.io".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create with owner")
        .into_inner();
    let org = created.organization.expect("organization").id;
    // The owner's token was lost: an admin invites the same email again.
    let reissued = invite(
        &app,
        &app.root(),
        &org,
        "owner@owned.io",
        MemberRole::Member,
    )
    .await;
    let invitation = reissued.invitation.expect("invitation");
    assert!(invitation.owner, "still the owner invitation");
    assert_eq!(
        invitation.role,
        MemberRole::ConfigAdmin as i32,
        "an owner is at least CONFIG_ADMIN"
    );
    let owner = app.token_for("", "", "owner-sub", Some("owner@owned.io"));
    let old = accept(&app, &owner, &created.owner_invitation_token)
        .await
        .expect_err("replaced");
    assert_eq!(reason(&old), "INVITATION_REVOKED");
    let member = accept(&app, &owner, &reissued.token).await.expect("accept");
    assert!(member.owner);
    let row = organizations::Entity::find()
        .filter(organizations::Column::Name.eq("Owned"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("org");
    assert_eq!(row.owner_user_id, "owner-sub");
    app.stop().await;
}
