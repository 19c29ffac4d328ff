//! Domain events: every mutation writes its event to the outbox, and WatchEvents streams
//! an organization's events live (an agency's with its tenants'), filtered by type and
//! resumable from any event's cursor without gaps or duplicates.

use std::{collections::HashSet, time::Duration};

use sea_orm::{ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use tenantry::{domain::events::types, events::outbox, proto, storage::entities::outbox_events};
use tonic::{Code, Status, Streaming};

use crate::{
    credits::gift,
    helpers::{Backend, TestApp, authed, violations},
    on_both_backends,
    organizations::{
        agency, mask, named_on, org_row, org_uuid, register_agent, tenant, unassign, usd,
    },
    usage::{batch, event, system},
};

on_both_backends!(
    watchers_see_the_orgs_live_events_and_an_agency_its_tenants,
    an_agencys_config_admin_watches_the_agency_alone_and_an_operator_its_tenants_too,
    the_sequencer_numbers_an_organizations_events_in_the_order_they_were_written,
    a_watch_resumes_after_a_cursor_without_gaps_or_duplicates,
    a_watch_filters_by_type,
    bad_cursors_and_unknown_types_are_refused_and_members_may_not_watch,
    each_mutation_emits_its_event,
);

type Events = Streaming<proto::WatchEventsResponse>;

/// Settings for event tests: a short poll interval.
fn fast(s: &mut tenantry::config::Settings) {
    s.events.poll_interval = Duration::from_millis(50);
}

/// Waits until the sequencer has numbered every event written so far.
async fn sequenced(app: &TestApp) {
    for _ in 0..200 {
        let waiting = outbox_events::Entity::find()
            .filter(outbox_events::Column::Position.is_null())
            .count(app.store.db())
            .await
            .expect("count unsequenced events");
        if waiting == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("events were not sequenced");
}

async fn try_watch(
    app: &TestApp,
    token: &str,
    org: &str,
    types: &[&str],
    after_cursor: &str,
) -> Result<Events, Status> {
    app.orgs()
        .watch_events(authed(
            proto::WatchEventsRequest {
                organization_id: org.into(),
                types: types.iter().map(|t| (*t).to_owned()).collect(),
                after_cursor: after_cursor.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn watch(app: &TestApp, token: &str, org: &str, types: &[&str], cursor: &str) -> Events {
    try_watch(app, token, org, types, cursor)
        .await
        .expect("watch events")
}

/// The next event of a stream (within ten seconds).
async fn next(stream: &mut Events) -> proto::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within ten seconds")
        .expect("stream open")
        .expect("stream not ended")
        .event
        .expect("event")
}

/// Whether the stream stays silent for `ms` milliseconds.
async fn silent(stream: &mut Events, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), stream.message())
        .await
        .is_err()
}

/// UpdateOrganization of the description, as `token` (one `organization.updated`).
async fn touch(app: &TestApp, token: &str, org: &str, description: &str) {
    app.orgs()
        .update_organization(authed(
            proto::UpdateOrganizationRequest {
                organization: Some(proto::Organization {
                    id: org.into(),
                    description: description.into(),
                    ..Default::default()
                }),
                update_mask: mask(&["description"]),
            },
            token,
        ))
        .await
        .expect("update organization");
}

/// The sequenced outbox rows of an organization (emitted by it), in position order.
async fn outbox(app: &TestApp, org: &str) -> Vec<outbox_events::Model> {
    outbox_events::Entity::find()
        .filter(outbox_events::Column::OrganizationId.eq(org_uuid(org)))
        .filter(outbox_events::Column::Position.is_not_null())
        .order_by_asc(outbox_events::Column::Position)
        .all(app.store.db())
        .await
        .expect("read outbox")
}

async fn watchers_see_the_orgs_live_events_and_an_agency_its_tenants(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let reseller = agency(&app, "Reseller").await;
    let client = tenant(&app, "Client", &reseller.id).await;
    let elsewhere = tenant(&app, "Elsewhere", "").await;
    sequenced(&app).await;
    let client_admin = app.token("CONFIG_ADMIN", &client.id);
    let agency_admin = app.token("AGENCY_ADMIN", &reseller.id);
    let mut of_client = watch(&app, &client_admin, &client.id, &[], "").await;
    let mut of_agency = watch(&app, &agency_admin, &reseller.id, &[], "").await;

    touch(&app, &client_admin, &client.id, "first").await;
    touch(&app, &app.root(), &elsewhere.id, "not theirs").await;
    touch(&app, &agency_admin, &reseller.id, "agency news").await;

    let seen = next(&mut of_client).await;
    assert!(seen.id.starts_with("evt_"), "{seen:?}");
    assert_eq!(seen.r#type, "organization.updated");
    assert_eq!(seen.organization_id, client.id);
    assert!(seen.create_time.is_some());
    assert!(!seen.cursor.is_empty());
    let payload: serde_json::Value = serde_json::from_str(&seen.payload).expect("JSON payload");
    assert_eq!(payload["organization_id"], client.id.as_str());
    assert_eq!(payload["changes"]["description"], "first");
    assert!(
        silent(&mut of_client, 300).await,
        "neither the agency's nor another org's events"
    );

    let first = next(&mut of_agency).await;
    let second = next(&mut of_agency).await;
    assert_eq!(
        (
            first.organization_id.as_str(),
            second.organization_id.as_str()
        ),
        (client.id.as_str(), reseller.id.as_str()),
        "the tenant's event, then the agency's own, in commit order"
    );
    assert_eq!(first.id, seen.id);
    assert!(silent(&mut of_agency, 300).await);
    app.stop().await;
}

async fn an_agencys_config_admin_watches_the_agency_alone_and_an_operator_its_tenants_too(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let reseller = agency(&app, "Reseller").await;
    let client = tenant(&app, "Client", &reseller.id).await;
    sequenced(&app).await;
    let config_admin = app.token("CONFIG_ADMIN", &reseller.id);
    let mut of_config_admin = watch(&app, &config_admin, &reseller.id, &[], "").await;
    let mut of_operator = watch(&app, &app.root(), &reseller.id, &[], "").await;

    touch(&app, &app.root(), &client.id, "the tenant's").await;
    touch(&app, &config_admin, &reseller.id, "the agency's").await;

    let own = next(&mut of_config_admin).await;
    assert_eq!(own.organization_id, reseller.id, "not the tenant's event");
    assert!(
        silent(&mut of_config_admin, 300).await,
        "a CONFIG_ADMIN acts on the agency alone"
    );
    let first = next(&mut of_operator).await;
    let second = next(&mut of_operator).await;
    assert_eq!(
        (
            first.organization_id.as_str(),
            second.organization_id.as_str()
        ),
        (client.id.as_str(), reseller.id.as_str()),
        "an operator sees the tenant's event too"
    );
    assert_eq!(second.id, own.id);
    assert!(silent(&mut of_operator, 300).await);
    app.stop().await;
}

/// Writes an event of `org` created at `at`, in its own transaction.
async fn emit_at(app: &TestApp, org: &str, at: i64, description: &str) -> uuid::Uuid {
    let row = org_row(app, org).await;
    let tx = app.store.write().await.expect("transaction");
    let id = outbox::emit(
        &tx,
        at,
        &row,
        types::ORGANIZATION_UPDATED,
        "req-test",
        serde_json::json!({ "description": description }),
    )
    .await
    .expect("emit");
    tx.commit().await.expect("commit");
    id
}

async fn the_sequencer_numbers_an_organizations_events_in_the_order_they_were_written(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        fast(s);
        s.events.dispatcher = false;
    })
    .await
    else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let now = app.store.now();
    // Create times come from each writer's clock and may disagree with the commit
    // order: the later-written event says it is older.
    let x = emit_at(&app, &acme.id, now + 1_000_000, "x").await;
    let y = emit_at(&app, &acme.id, now - 1_000_000, "y").await;
    while outbox::sequence(&app.store).await.expect("sequence") > 0 {}
    let store = &app.store;
    let row = |id| async move {
        outbox_events::Entity::find_by_id(id)
            .one(store.db())
            .await
            .expect("read event")
            .expect("event")
    };
    let (x, y) = (row(x).await, row(y).await);
    assert!(x.create_time > y.create_time);
    let (x, y) = (
        x.position.expect("x numbered"),
        y.position.expect("y numbered"),
    );
    assert!(x < y, "written first, numbered first: {x} < {y}");
    app.stop().await;
}

async fn a_watch_resumes_after_a_cursor_without_gaps_or_duplicates(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let other = tenant(&app, "Other", "").await;
    sequenced(&app).await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let mut stream = watch(&app, &admin, &acme.id, &[], "").await;
    for i in 0..30 {
        touch(&app, &admin, &acme.id, &format!("v{i}")).await;
        // Interleaved events of another organization take positions in between.
        if i % 3 == 0 {
            touch(&app, &app.root(), &other.id, &format!("o{i}")).await;
        }
    }
    let mut read = Vec::new();
    for _ in 0..10 {
        read.push(next(&mut stream).await);
    }
    drop(stream);
    for i in 30..40 {
        touch(&app, &admin, &acme.id, &format!("v{i}")).await;
    }
    sequenced(&app).await;

    let tenth = read[9].clone();
    let mut resumed = watch(&app, &admin, &acme.id, &[], &tenth.cursor).await;
    let mut rest = Vec::new();
    for _ in 0..30 {
        rest.push(next(&mut resumed).await);
    }
    assert!(silent(&mut resumed, 300).await, "nothing after the last");

    let stored = outbox(&app, &acme.id).await;
    let expected: Vec<String> = stored
        .iter()
        .filter(|e| e.event_type == "organization.updated")
        .map(|e| tenantry::domain::ids::encode(tenantry::domain::ids::IdKind::Event, e.id))
        .collect();
    let got: Vec<String> = read.iter().chain(&rest).map(|e| e.id.clone()).collect();
    assert_eq!(got.len(), 40);
    assert_eq!(got, expected, "every event once, in outbox order");
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        40,
        "no duplicates"
    );
    let descriptions: Vec<String> = read
        .iter()
        .chain(&rest)
        .map(|e| {
            let payload: serde_json::Value = serde_json::from_str(&e.payload).expect("payload");
            payload["changes"]["description"]
                .as_str()
                .expect("description")
                .to_owned()
        })
        .collect();
    let written: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
    assert_eq!(descriptions, written);
    assert!(
        rest.iter().all(|e| e.organization_id == acme.id),
        "never another organization's"
    );
    app.stop().await;
}

async fn a_watch_filters_by_type(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let acme = create_team_org(&app, "Acme").await;
    sequenced(&app).await;
    let admin = app.token("CONFIG_ADMIN", &acme);
    let mut invites = watch(
        &app,
        &admin,
        &acme,
        &["member.invited", "agent.registered"],
        "",
    )
    .await;
    touch(&app, &admin, &acme, "ignored").await;
    app.orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: acme.clone(),
                email: "bo@acme.io".into(),
                role: proto::MemberRole::Member as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("invite");
    touch(&app, &admin, &acme, "ignored too").await;
    let agent = register_agent(&app, &app.root(), &acme, "Alpha").await;
    let invited = next(&mut invites).await;
    assert_eq!(invited.r#type, "member.invited");
    let payload: serde_json::Value = serde_json::from_str(&invited.payload).expect("payload");
    assert_eq!(payload["email"], "bo@acme.io");
    assert!(!invited.payload.contains("ivt_tok_"), "never the token");
    let registered = next(&mut invites).await;
    assert_eq!(registered.r#type, "agent.registered");
    assert!(registered.payload.contains(&agent.id));
    assert!(silent(&mut invites, 300).await);
    app.stop().await;
}

async fn bad_cursors_and_unknown_types_are_refused_and_members_may_not_watch(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let other = tenant(&app, "Other", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    for bad in ["abc", "-1", "1.5", " 7", "99999999999999999999999"] {
        let refused = try_watch(&app, &admin, &acme.id, &[], bad)
            .await
            .expect_err("malformed cursor");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(violations(&refused), vec!["after_cursor"], "{bad:?}");
    }
    let refused = try_watch(
        &app,
        &admin,
        &acme.id,
        &["organization.created", "organization.exploded"],
        "",
    )
    .await
    .expect_err("unknown type");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), vec!["types[1]"]);
    let member = try_watch(&app, &app.token("MEMBER", &acme.id), &acme.id, &[], "")
        .await
        .expect_err("members do not watch");
    assert_eq!(member.code(), Code::PermissionDenied);
    let foreign = try_watch(&app, &admin, &other.id, &[], "")
        .await
        .expect_err("another organization");
    assert_eq!(foreign.code(), Code::PermissionDenied);
    // A cursor from the future is well formed: the watch waits for it.
    let mut ahead = watch(&app, &admin, &acme.id, &[], "1000000").await;
    touch(&app, &admin, &acme.id, "too early").await;
    assert!(silent(&mut ahead, 300).await);
    app.stop().await;
}

/// A self-managed tenant on the team plan (room for members and agents), created by
/// the root admin with an owner invitation.
async fn create_team_org(app: &TestApp, name: &str) -> String {
    app.orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(named_on(name, "team")),
                owner: Some(proto::OwnerInvite {
                    email: format!("owner@{}.io", name.to_lowercase()),
                    first_name: "Olu".into(),
                    last_name: "Owner".into(),
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create organization")
        .into_inner()
        .organization
        .expect("organization")
        .id
}

fn rid() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn each_mutation_emits_its_event(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let root = app.root();
    let org = create_team_org(&app, "Scenario").await;
    let admin = app.token("CONFIG_ADMIN", &org);
    let orgs = app.orgs();
    let billing = app.billing();
    let subs = app.subscriptions();
    touch(&app, &admin, &org, "updated").await;

    let invited = orgs
        .clone()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.clone(),
                email: "bo@scenario.io".into(),
                role: proto::MemberRole::Member as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("invite")
        .into_inner();
    let bo = app.token_for("", "", "user-bo", Some("bo@scenario.io"));
    let member = orgs
        .clone()
        .accept_invitation(authed(
            proto::AcceptInvitationRequest {
                token: invited.token.clone(),
                name: String::new(),
            },
            &bo,
        ))
        .await
        .expect("accept")
        .into_inner()
        .member
        .expect("member");
    orgs.clone()
        .remove_member(authed(
            proto::RemoveMemberRequest {
                organization_id: org.clone(),
                member_id: member.id.clone(),
            },
            &admin,
        ))
        .await
        .expect("remove member");

    let agent = register_agent(&app, &root, &org, "Alpha").await;
    unassign(&app, &agent.id).await;
    orgs.clone()
        .assign_agent(authed(
            proto::AssignAgentRequest {
                agent_id: agent.id.clone(),
                organization_id: org.clone(),
                request_id: String::new(),
            },
            &root,
        ))
        .await
        .expect("assign agent");

    orgs.clone()
        .deactivate_organization(authed(
            proto::DeactivateOrganizationRequest {
                organization_id: org.clone(),
                reason: "audit".into(),
                notify_owner: true,
            },
            &root,
        ))
        .await
        .expect("deactivate");
    orgs.clone()
        .reactivate_organization(authed(
            proto::ReactivateOrganizationRequest {
                organization_id: org.clone(),
            },
            &root,
        ))
        .await
        .expect("reactivate");

    billing
        .clone()
        .set_spend_limit(authed(
            proto::SetSpendLimitRequest {
                organization_id: org.clone(),
                monthly_spend_limit: Some(usd("10.00")),
                billing_alerts: Some(proto::BillingAlerts {
                    alert_thresholds: vec![50],
                    alert_emails: vec!["billing@scenario.io".into()],
                    action_at_100: proto::SpendLimitAction::NotifyOnly as i32,
                }),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .expect("set spend limit");
    batch(
        &app,
        &system(&app),
        &org,
        vec![event(
            "u1",
            &agent.id,
            proto::UsageMetric::Tokens,
            10,
            "6.00",
        )],
    )
    .await;

    gift(&app, &org, "1000.00").await;
    subs.clone()
        .create_subscription(authed(
            proto::CreateSubscriptionRequest {
                organization_id: org.clone(),
                plan_id: "pro".into(),
                interval: proto::BillingInterval::Month as i32,
                trial_days: 0,
                request_id: rid(),
            },
            &admin,
        ))
        .await
        .expect("subscribe");
    let invoice = billing
        .clone()
        .create_invoice(authed(
            proto::CreateInvoiceRequest {
                organization_id: org.clone(),
                lines: vec![proto::CreateInvoiceLine {
                    description: "Setup".into(),
                    quantity: 1,
                    unit_amount: Some(usd("25.00")),
                }],
                request_id: rid(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .expect("create invoice")
        .into_inner()
        .invoice
        .expect("invoice");
    billing
        .clone()
        .pay_invoice(authed(
            proto::PayInvoiceRequest {
                organization_id: org.clone(),
                invoice_id: invoice.id.clone(),
                request_id: rid(),
            },
            &admin,
        ))
        .await
        .expect("pay invoice");
    let bought = billing
        .clone()
        .buy_credits(authed(
            proto::BuyCreditsRequest {
                organization_id: org.clone(),
                amount: Some(usd("15.00")),
                gateway: "manual".into(),
                payment_method_id: String::new(),
                request_id: rid(),
            },
            &root,
        ))
        .await
        .expect("buy credits")
        .into_inner();
    billing
        .clone()
        .confirm_manual_payment(authed(
            proto::ConfirmManualPaymentRequest {
                organization_id: org.clone(),
                payment_intent_id: bought.payment_intent_id.clone(),
                note: "wire received".into(),
                request_id: rid(),
            },
            &root,
        ))
        .await
        .expect("confirm payment");

    orgs.clone()
        .cancel_account(authed(
            proto::CancelAccountRequest {
                organization_id: org.clone(),
                reason: "closing".into(),
                delete_data_on: String::new(),
                request_id: rid(),
            },
            &admin,
        ))
        .await
        .expect("cancel account");
    orgs.clone()
        .reactivate_account(authed(
            proto::ReactivateAccountRequest {
                organization_id: org.clone(),
                reason: "back".into(),
            },
            &root,
        ))
        .await
        .expect("reactivate account");
    unassign(&app, &agent.id).await;
    orgs.clone()
        .delete_organization(authed(
            proto::DeleteOrganizationRequest {
                organization_id: org.clone(),
                etag: String::new(),
                request_id: rid(),
            },
            &root,
        ))
        .await
        .expect("delete organization");
    sequenced(&app).await;

    let stored = outbox(&app, &org).await;
    let types: Vec<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    let data = |t: &str| -> Vec<serde_json::Value> {
        stored
            .iter()
            .filter(|e| e.event_type == t)
            .map(|e| serde_json::from_str(&e.payload).expect("payload"))
            .collect()
    };
    for (action, expected) in [
        ("CreateOrganization", "organization.created"),
        ("CreateOrganization with an owner", "owner.invited"),
        ("UpdateOrganization, SetSpendLimit", "organization.updated"),
        ("InviteMember", "member.invited"),
        ("RemoveMember", "member.removed"),
        ("RegisterAgent", "agent.registered"),
        ("UnassignAgent", "agent.moved"),
        ("AssignAgent", "agent.assigned"),
        ("DeactivateOrganization", "organization.deactivated"),
        ("ReactivateOrganization", "organization.reactivated"),
        ("usage past 50 %", "usage.threshold_crossed"),
        ("CreateSubscription, CreateInvoice", "invoice.issued"),
        ("PayInvoice, prepaid subscription", "invoice.paid"),
        ("ConfirmManualPayment", "payment.succeeded"),
        ("CreateSubscription, CancelAccount", "subscription.changed"),
        ("CancelAccount", "account.canceled"),
        ("ReactivateAccount", "account.reactivated"),
        ("DeleteOrganization", "organization.deleted"),
    ] {
        assert!(
            types.contains(&expected),
            "{action} emits {expected}: {types:?}"
        );
    }
    assert_eq!(types.first(), Some(&"organization.created"));
    assert_eq!(types.last(), Some(&"organization.deleted"));
    assert_eq!(data("organization.updated").len(), 2);
    assert_eq!(data("invoice.issued").len(), 2);
    assert_eq!(data("invoice.paid").len(), 2);
    assert_eq!(data("agent.moved").len(), 2, "unassigned twice");
    assert_eq!(data("agent.assigned").len(), 1, "assigned back once");
    let changes: Vec<String> = data("subscription.changed")
        .iter()
        .map(|d| d["change"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(changes, vec!["created", "canceled"]);
    let deactivated = &data("organization.deactivated")[0];
    assert_eq!(deactivated["reason"], "audit");
    assert_eq!(deactivated["notify_owner"], true);
    let crossed = &data("usage.threshold_crossed")[0];
    assert_eq!(crossed["threshold"], 50);
    assert_eq!(crossed["monthly_spend_limit"], "10.00");
    assert_eq!(crossed["currency"], "USD");
    let paid = &data("payment.succeeded")[0];
    assert_eq!(paid["amount"], "15.00");
    assert_eq!(paid["transaction_id"], bought.transaction_id.as_str());
    let issued: Vec<String> = data("invoice.issued")
        .iter()
        .map(|d| d["invoice_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(issued.contains(&invoice.id));
    for event in &stored {
        let payload: serde_json::Value = serde_json::from_str(&event.payload).expect("payload");
        assert_eq!(payload["organization_id"], org.as_str(), "{event:?}");
        assert!(!event.payload.contains("ivt_tok_"), "no secrets: {event:?}");
    }
    // The root organization saw the agent arrive and leave.
    let root_id = app
        .orgs()
        .get_organization(authed(
            proto::GetOrganizationRequest {
                organization_id: "internal".into(),
            },
            &root,
        ))
        .await
        .expect("root")
        .into_inner()
        .organization
        .expect("root")
        .id;
    let at_root: Vec<String> = outbox_events::Entity::find()
        .filter(
            Condition::all()
                .add(outbox_events::Column::OrganizationId.eq(org_uuid(&root_id)))
                .add(outbox_events::Column::EventType.starts_with("agent.")),
        )
        .order_by_asc(outbox_events::Column::Position)
        .all(app.store.db())
        .await
        .expect("root events")
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        at_root,
        vec!["agent.assigned", "agent.moved", "agent.assigned"]
    );
    app.stop().await;
}
