//! Account lifecycle (SPEC §4): CancelAccount ends the subscription, suspends the
//! agents and API access, and may schedule the data's deletion; ReactivateAccount
//! (root admin only) undoes it; the renewal cycle's helper deletes due accounts.

use chrono::{TimeZone, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};
use tenantry::{
    domain::ids::{self, IdKind},
    proto,
    service::subscriptions::account::delete_due_accounts,
    storage::entities::{agent_assignments, api_keys, audit_entries, subscriptions},
};
use tonic::{Code, Status};

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{
        agent_row, agent_uuid, audit_actions, get, org_row, org_uuid, register_agent, tenant,
    },
    subscriptions::{mid_november, on_clock, subscribe},
};

fn micros(y: i32, m: u32, d: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("instant")
        .timestamp_micros()
}

fn cancel_request(org_id: &str, delete_on: &str, request_id: &str) -> proto::CancelAccountRequest {
    proto::CancelAccountRequest {
        organization_id: org_id.into(),
        reason: "moving to another provider".into(),
        delete_data_on: delete_on.into(),
        request_id: request_id.into(),
    }
}

async fn cancel(
    app: &TestApp,
    token: &str,
    request: proto::CancelAccountRequest,
) -> Result<proto::Organization, Status> {
    app.orgs()
        .cancel_account(authed(request, token))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

async fn reactivate(
    app: &TestApp,
    token: &str,
    org_id: &str,
) -> Result<proto::Organization, Status> {
    let request = proto::ReactivateAccountRequest {
        organization_id: org_id.into(),
        reason: "paid the arrears".into(),
    };
    app.orgs()
        .reactivate_account(authed(request, token))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

async fn api_key(app: &TestApp, org_id: &str) -> String {
    let request = proto::RegenerateApiKeyRequest {
        organization_id: org_id.into(),
    };
    app.orgs()
        .regenerate_api_key(authed(request, &app.token("CONFIG_ADMIN", org_id)))
        .await
        .expect("api key")
        .into_inner()
        .api_key
}

async fn list_agents(app: &TestApp, credential: &str, org_id: &str) -> Result<usize, Status> {
    let request = proto::ListAgentsRequest {
        organization_id: org_id.into(),
        ..Default::default()
    };
    app.orgs()
        .list_agents(authed(request, credential))
        .await
        .map(|r| r.into_inner().agents.len())
}

async fn subscription_rows(app: &TestApp, org_id: &str) -> Vec<subscriptions::Model> {
    subscriptions::Entity::find()
        .filter(subscriptions::Column::OrganizationId.eq(org_uuid(org_id)))
        .all(app.store.db())
        .await
        .expect("read subscriptions")
}

/// Marks an agent as suspended by hand (not by its organization), as an operator
/// tool would: such an agent must stay suspended across cancel and reactivation.
async fn suspend_by_hand(app: &TestApp, agent_id: &str) {
    let mut row = agent_row(app, agent_id).await.into_active_model();
    row.status = Set("SUSPENDED".into());
    row.suspended_by_org = Set(false);
    row.update(app.store.db()).await.expect("suspend agent");
}

on_both_backends!(
    cancelling_ends_the_subscription_suspends_agents_and_refuses_api_access,
    a_retry_with_the_same_request_id_returns_the_first_result,
    only_the_root_admin_reactivates_and_agents_come_back,
    deletion_dates_and_reasons_are_checked_before_anything_changes,
    due_accounts_are_deleted_with_their_agents_returned_to_the_root,
);

async fn cancelling_ends_the_subscription_suspends_agents_and_refuses_api_access(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let acme = tenant(&app, "Acme Corp", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let member = app.token("MEMBER", &acme.id);
    // Pro allows the three agents below (free allows one).
    let sub = subscribe(&app, &acme.id, "pro")
        .await
        .subscription
        .expect("subscription");
    let agents = [
        register_agent(&app, &admin, &acme.id, "Bot 1").await,
        register_agent(&app, &admin, &acme.id, "Bot 2").await,
        register_agent(&app, &admin, &acme.id, "Bot 3").await,
    ];
    suspend_by_hand(&app, &agents[2].id).await;
    let key = api_key(&app, &acme.id).await;
    assert_eq!(
        list_agents(&app, &key, &acme.id).await.expect("key works"),
        3
    );

    let cancelled = cancel(&app, &admin, cancel_request(&acme.id, "2026-12-15", "c-1"))
        .await
        .expect("cancel");
    assert_eq!(
        cancelled.status,
        proto::OrganizationStatus::Cancelled as i32
    );
    assert_eq!(cancelled.deactivation_reason, "moving to another provider");
    assert_eq!(cancelled.plan, "free", "back on the free plan");
    assert_eq!(cancelled.agent_count, 3, "agents stay assigned");

    let row = org_row(&app, &acme.id).await;
    assert_eq!(row.status, "CANCELLED");
    assert_eq!(row.data_deletion_time, Some(micros(2026, 12, 15)));
    assert_eq!(row.plan, "free");
    for agent in &agents[..2] {
        let a = agent_row(&app, &agent.id).await;
        assert_eq!((a.status.as_str(), a.suspended_by_org), ("SUSPENDED", true));
    }
    let manual = agent_row(&app, &agents[2].id).await;
    assert_eq!(
        (manual.status.as_str(), manual.suspended_by_org),
        ("SUSPENDED", false)
    );

    // The subscription ended at once.
    let rows = subscription_rows(&app, &acme.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(ids::encode(IdKind::Subscription, rows[0].id), sub.id);
    assert_eq!(rows[0].status, "CANCELED");
    assert_eq!(rows[0].end_time, Some(mid_november().timestamp_micros()));
    assert_eq!(rows[0].status_reason, "moving to another provider");

    // The key and the members are refused, except reading the org's own status.
    for credential in [&key, &member, &admin] {
        let refused = list_agents(&app, credential, &acme.id)
            .await
            .expect_err("cancelled account");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "ORG_INACTIVE");
        let own = get(&app, credential, &acme.id)
            .await
            .expect("own status stays readable");
        assert_eq!(own.status, proto::OrganizationStatus::Cancelled as i32);
    }
    // Operators still reach it.
    assert_eq!(
        list_agents(&app, &app.root(), &acme.id)
            .await
            .expect("root"),
        3
    );
    // A cancelled account cannot simply be switched back on.
    let refused = app
        .orgs()
        .set_organization_active(authed(
            proto::SetOrganizationActiveRequest {
                organization_id: acme.id.clone(),
                active: true,
                reason: String::new(),
            },
            &app.root(),
        ))
        .await
        .expect_err("use ReactivateAccount");
    assert_eq!(reason(&refused), "ACCOUNT_CANCELLED");

    let entry = audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(acme.id.as_str()))
        .filter(audit_entries::Column::Action.eq("CancelAccount"))
        .one(app.store.db())
        .await
        .expect("read audit")
        .expect("CancelAccount audited");
    assert_eq!(entry.request_id, "c-1");
    let summary: serde_json::Value = serde_json::from_str(&entry.summary).expect("summary");
    assert_eq!(summary["suspended_agents"], 2);
    assert_eq!(summary["ended_subscription_id"], sub.id.as_str());
    assert_eq!(summary["delete_data_on"], "2026-12-15");
    app.stop().await;
}

async fn a_retry_with_the_same_request_id_returns_the_first_result(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    // The org's own admin is refused by the auth layer once the account is cancelled
    // (ORG_INACTIVE), so the replay is shown with an operator's retries.
    let root = app.root();
    let acme = tenant(&app, "Acme Corp", "").await;
    let first = cancel(&app, &root, cancel_request(&acme.id, "2026-11-30", "r-1"))
        .await
        .expect("cancel");
    // Without a subscription there is nothing to end; the account still cancels.
    assert!(subscription_rows(&app, &acme.id).await.is_empty());
    let version = org_row(&app, &acme.id).await.version;
    let again = cancel(&app, &root, cancel_request(&acme.id, "2026-11-30", "r-1"))
        .await
        .expect("replayed");
    assert_eq!(again, first, "the first result, unchanged");
    assert_eq!(org_row(&app, &acme.id).await.version, version);
    let cancels = audit_actions(&app, &acme.id)
        .await
        .into_iter()
        .filter(|a| a == "CancelAccount")
        .count();
    assert_eq!(cancels, 1, "the retry changed nothing");
    // Same id, other arguments: refused.
    let mut changed = cancel_request(&acme.id, "2026-12-01", "r-1");
    changed.reason = "other".into();
    let refused = cancel(&app, &root, changed)
        .await
        .expect_err("same id, other request");
    assert_eq!(refused.code(), Code::InvalidArgument);
    // A new request, or one without id, on a cancelled account: FAILED_PRECONDITION.
    for request_id in ["r-2", ""] {
        let refused = cancel(&app, &root, cancel_request(&acme.id, "", request_id))
            .await
            .expect_err("already cancelled");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "ACCOUNT_CANCELLED");
    }
    let row = org_row(&app, &acme.id).await;
    assert_eq!(row.data_deletion_time, Some(micros(2026, 11, 30)));
    assert_eq!(row.version, version);
    app.stop().await;
}

async fn only_the_root_admin_reactivates_and_agents_come_back(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let acme = tenant(&app, "Acme Corp", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    subscribe(&app, &acme.id, "basic").await;
    let bots = [
        register_agent(&app, &admin, &acme.id, "Bot 1").await,
        register_agent(&app, &admin, &acme.id, "Bot 2").await,
    ];
    suspend_by_hand(&app, &bots[1].id).await;
    let key = api_key(&app, &acme.id).await;
    cancel(&app, &admin, cancel_request(&acme.id, "2027-01-01", "c"))
        .await
        .expect("cancel");

    for token in [
        admin.clone(),
        app.token("ROOT_POWER_USER", "internal"),
        app.token("SYSTEM", ""),
    ] {
        let denied = reactivate(&app, &token, &acme.id)
            .await
            .expect_err("root admin only");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    assert_eq!(org_row(&app, &acme.id).await.status, "CANCELLED");

    let active = reactivate(&app, &app.root(), &acme.id)
        .await
        .expect("reactivate");
    assert_eq!(active.status, proto::OrganizationStatus::Active as i32);
    assert!(active.deactivation_reason.is_empty());
    // The subscription stays ended: the org is on the free plan until it subscribes.
    assert_eq!(active.plan, "free");
    let rows = subscription_rows(&app, &acme.id).await;
    assert!(rows.iter().all(|s| s.status == "CANCELED"), "{rows:?}");
    let row = org_row(&app, &acme.id).await;
    assert_eq!(row.data_deletion_time, None);
    let restored = agent_row(&app, &bots[0].id).await;
    assert_eq!(
        (restored.status.as_str(), restored.suspended_by_org),
        ("ACTIVE", false)
    );
    let manual = agent_row(&app, &bots[1].id).await;
    assert_eq!(manual.status, "SUSPENDED", "a manual suspension stays");
    // API access is back.
    assert_eq!(
        list_agents(&app, &key, &acme.id).await.expect("key works"),
        2
    );
    assert_eq!(list_agents(&app, &admin, &acme.id).await.expect("admin"), 2);

    let again = reactivate(&app, &app.root(), &acme.id)
        .await
        .expect_err("not cancelled");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "ACCOUNT_NOT_CANCELLED");
    let actions = audit_actions(&app, &acme.id).await;
    assert!(
        actions.contains(&"ReactivateAccount".to_owned()),
        "{actions:?}"
    );
    app.stop().await;
}

async fn deletion_dates_and_reasons_are_checked_before_anything_changes(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let acme = tenant(&app, "Acme Corp", "").await;
    let globex = tenant(&app, "Globex", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let version = org_row(&app, &acme.id).await.version;

    // Callers without the right are refused before the input is judged.
    for token in [
        app.token("MEMBER", &acme.id),
        app.token("CONFIG_ADMIN", &globex.id),
    ] {
        let denied = cancel(&app, &token, cancel_request(&acme.id, "yesterday", ""))
            .await
            .expect_err("not allowed");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    // The clock says 2026-11-15: the day before is in the past.
    let long_id = "r".repeat(129);
    let mut bad = cancel_request(&acme.id, "2026-11-14", &long_id);
    bad.reason = "x".repeat(501);
    let refused = cancel(&app, &admin, bad).await.expect_err("bad input");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(fields, ["delete_data_on", "reason", "request_id"]);
    for date in ["2026-13-01", "15/12/2026", "2026-12-1", "tomorrow"] {
        let refused = cancel(&app, &admin, cancel_request(&acme.id, date, ""))
            .await
            .expect_err("not a date");
        assert_eq!(violations(&refused), ["delete_data_on"], "{date}");
    }
    let row = org_row(&app, &acme.id).await;
    assert_eq!((row.status.as_str(), row.version), ("ACTIVE", version));
    // The root organization's account cannot be cancelled.
    let root_org = cancel(&app, &app.root(), cancel_request("internal", "", ""))
        .await
        .expect_err("root org");
    assert_eq!(reason(&root_org), "ROOT_ORGANIZATION");
    // Today is fine: deletion at the start of the day.
    cancel(&app, &admin, cancel_request(&acme.id, "2026-11-15", ""))
        .await
        .expect("today");
    assert_eq!(
        org_row(&app, &acme.id).await.data_deletion_time,
        Some(micros(2026, 11, 15))
    );
    app.stop().await;
}

async fn due_accounts_are_deleted_with_their_agents_returned_to_the_root(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let root = app.root();
    let acme = tenant(&app, "Acme Corp", "").await;
    let globex = tenant(&app, "Globex", "").await;
    let initech = tenant(&app, "Initech", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let bot = register_agent(&app, &admin, &acme.id, "Acme Bot").await;
    let key = api_key(&app, &acme.id).await;
    cancel(&app, &root, cancel_request(&acme.id, "2026-11-20", ""))
        .await
        .expect("cancel acme");
    cancel(&app, &root, cancel_request(&globex.id, "2026-12-01", ""))
        .await
        .expect("cancel globex");
    // Cancelled without a date: kept.
    cancel(&app, &root, cancel_request(&initech.id, "", ""))
        .await
        .expect("cancel initech");

    let ctx = app.replica_ctx();
    let before = micros(2026, 11, 20) - 1;
    assert_eq!(delete_due_accounts(&ctx, before).await.expect("run"), 0);
    assert_eq!(org_row(&app, &acme.id).await.delete_time, None);

    assert_eq!(
        delete_due_accounts(&ctx, micros(2026, 11, 20))
            .await
            .expect("run"),
        1
    );
    let gone = get(&app, &root, &acme.id).await.expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let row = org_row(&app, &acme.id).await;
    assert_eq!(row.delete_time, Some(mid_november().timestamp_micros()));
    // The agent is back in the root organization, active, with its history kept.
    let agent = agent_row(&app, &bot.id).await;
    let root_row = org_row(&app, &get(&app, &root, "internal").await.expect("root").id).await;
    assert_eq!(agent.organization_id, root_row.id);
    assert_eq!(
        (agent.status.as_str(), agent.suspended_by_org),
        ("ACTIVE", false)
    );
    let history = agent_assignments::Entity::find()
        .filter(agent_assignments::Column::AgentId.eq(agent_uuid(&bot.id)))
        .order_by_asc(agent_assignments::Column::AssignTime)
        .all(app.store.db())
        .await
        .expect("assignments");
    let orgs: Vec<_> = history.iter().map(|a| a.organization_id).collect();
    assert_eq!(orgs.last(), Some(&root_row.id));
    assert!(orgs.contains(&org_uuid(&acme.id)));
    assert_eq!(
        history.iter().filter(|a| a.unassign_time.is_none()).count(),
        1,
        "one open assignment"
    );
    // Its API keys are revoked.
    let keys = api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(org_uuid(&acme.id)))
        .all(app.store.db())
        .await
        .expect("keys");
    assert!(keys.iter().all(|k| k.revoke_time.is_some()));
    let refused = list_agents(&app, &key, &acme.id)
        .await
        .expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    // Audited by the SYSTEM principal of the cycle.
    let deletion = audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(acme.id.as_str()))
        .filter(audit_entries::Column::Action.eq("DeleteOrganization"))
        .one(app.store.db())
        .await
        .expect("read audit")
        .expect("deletion audited");
    assert_eq!(
        (deletion.actor_kind.as_str(), deletion.actor_id.as_str()),
        ("SYSTEM", "billing-cycle")
    );
    assert!(
        audit_actions(&app, &bot.id)
            .await
            .contains(&"UnassignAgent".to_owned())
    );

    // Running again deletes nothing more; globex's date has not come yet.
    assert_eq!(
        delete_due_accounts(&ctx, micros(2026, 11, 30))
            .await
            .expect("run"),
        0
    );
    assert_eq!(org_row(&app, &globex.id).await.delete_time, None);
    assert_eq!(
        delete_due_accounts(&ctx, micros(2026, 12, 1))
            .await
            .expect("run"),
        1
    );
    assert!(org_row(&app, &globex.id).await.delete_time.is_some());
    assert_eq!(org_row(&app, &initech.id).await.delete_time, None);
    app.stop().await;
}
