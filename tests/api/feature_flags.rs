//! Feature flags (SPEC §4): effective flags = the plan's defaults plus per-organization
//! overrides, set and cleared by operators, shown on the organization and on the
//! subscription, kept across plan changes.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tenantry::{proto, storage::entities::audit_entries};
use tonic::{Code, Status};

use crate::{
    helpers::{Backend, TestApp, authed, violations},
    on_both_backends,
    organizations::{agency, audit_actions, get, org_row, tenant},
};

async fn set_flag(
    app: &TestApp,
    token: &str,
    org_id: &str,
    flag: &str,
    enabled: bool,
) -> Result<Vec<String>, Status> {
    let request = proto::SetFeatureFlagRequest {
        organization_id: org_id.into(),
        flag: flag.into(),
        enabled,
    };
    app.orgs()
        .set_feature_flag(authed(request, token))
        .await
        .map(|r| r.into_inner().features)
}

async fn clear_flag(
    app: &TestApp,
    token: &str,
    org_id: &str,
    flag: &str,
) -> Result<Vec<String>, Status> {
    let request = proto::ClearFeatureFlagRequest {
        organization_id: org_id.into(),
        flag: flag.into(),
    };
    app.orgs()
        .clear_feature_flag(authed(request, token))
        .await
        .map(|r| r.into_inner().features)
}

/// AdminUpdateSubscription to `plan` as the root admin.
async fn put_on_plan(app: &TestApp, org_id: &str, plan: &str) {
    let request = proto::AdminUpdateSubscriptionRequest {
        organization_id: org_id.into(),
        plan_id: plan.into(),
        reason: format!("move to {plan}"),
        request_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    app.subscriptions()
        .admin_update_subscription(authed(request, &app.root()))
        .await
        .expect("admin update subscription");
}

async fn effective_on_subscription(app: &TestApp, org_id: &str) -> Vec<String> {
    let request = proto::GetSubscriptionRequest {
        organization_id: org_id.into(),
    };
    app.subscriptions()
        .get_subscription(authed(request, &app.root()))
        .await
        .expect("get subscription")
        .into_inner()
        .effective_features
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

on_both_backends!(
    operators_add_and_remove_flags_over_the_plan_defaults,
    a_plan_change_changes_the_defaults_and_keeps_the_overrides,
    only_operators_set_flags_and_bad_names_are_refused,
);

async fn operators_add_and_remove_flags_over_the_plan_defaults(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = tenant(&app, "Acme Corp", "").await;
    // The free plan grants basic_analytics only.
    assert_eq!(acme.features, strings(&["basic_analytics"]));
    let version = org_row(&app, &acme.id).await.version;

    let features = set_flag(&app, &root, &acme.id, "sso", true)
        .await
        .expect("add sso");
    assert_eq!(features, strings(&["basic_analytics", "sso"]));
    let features = set_flag(&app, &root, &acme.id, "basic_analytics", false)
        .await
        .expect("remove a default");
    assert_eq!(features, strings(&["sso"]));
    let row = org_row(&app, &acme.id).await;
    let stored: serde_json::Value =
        serde_json::from_str(&row.feature_overrides).expect("overrides JSON");
    assert_eq!(
        stored,
        serde_json::json!({ "basic_analytics": false, "sso": true })
    );
    assert_eq!(row.version, version + 2, "each change is a new version");

    // The organization shows its effective flags to its own members.
    let member = app.token("MEMBER", &acme.id);
    let seen = get(&app, &member, &acme.id).await.expect("get");
    assert_eq!(seen.features, strings(&["sso"]));
    assert_eq!(
        effective_on_subscription(&app, &acme.id).await,
        seen.features
    );

    // Setting the same override again changes nothing.
    let features = set_flag(&app, &root, &acme.id, "sso", true)
        .await
        .expect("same again");
    assert_eq!(features, strings(&["sso"]));
    assert_eq!(org_row(&app, &acme.id).await.version, version + 2);

    // Clearing puts the plan's default back; clearing a flag without override is a
    // successful no-op.
    let features = clear_flag(&app, &root, &acme.id, "basic_analytics")
        .await
        .expect("clear");
    assert_eq!(features, strings(&["basic_analytics", "sso"]));
    let features = clear_flag(&app, &root, &acme.id, "never_set")
        .await
        .expect("clear without override");
    assert_eq!(features, strings(&["basic_analytics", "sso"]));
    let row = org_row(&app, &acme.id).await;
    assert_eq!(row.version, version + 3);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&row.feature_overrides).expect("JSON"),
        serde_json::json!({ "sso": true })
    );
    let seen = get(&app, &member, &acme.id).await.expect("get");
    assert_eq!(seen.features, strings(&["basic_analytics", "sso"]));

    // Three real changes, three audit entries with the before/after flags.
    let actions = audit_actions(&app, &acme.id).await;
    let flag_actions: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| a.contains("FeatureFlag"))
        .collect();
    assert_eq!(
        flag_actions,
        ["SetFeatureFlag", "SetFeatureFlag", "ClearFeatureFlag"]
    );
    let cleared = audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(acme.id.as_str()))
        .filter(audit_entries::Column::Action.eq("ClearFeatureFlag"))
        .order_by_desc(audit_entries::Column::CreateTime)
        .one(app.store.db())
        .await
        .expect("read audit")
        .expect("ClearFeatureFlag entry");
    let summary: serde_json::Value = serde_json::from_str(&cleared.summary).expect("summary");
    assert_eq!(summary["flag"], "basic_analytics");
    assert_eq!(summary["enabled"], serde_json::Value::Null);
    assert_eq!(summary["override_before"], false);
    assert_eq!(summary["features_before"], serde_json::json!(["sso"]));
    assert_eq!(
        summary["features_after"],
        serde_json::json!(["basic_analytics", "sso"])
    );
    assert_eq!(cleared.actor_kind, "USER");
    app.stop().await;
}

async fn a_plan_change_changes_the_defaults_and_keeps_the_overrides(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = tenant(&app, "Acme Corp", "").await;
    set_flag(&app, &root, &acme.id, "sso", true)
        .await
        .expect("add sso");
    set_flag(&app, &root, &acme.id, "webhooks", false)
        .await
        .expect("remove webhooks");

    put_on_plan(&app, &acme.id, "pro").await;
    let seen = get(&app, &root, &acme.id).await.expect("get");
    assert_eq!(seen.plan, "pro");
    // Pro's defaults minus webhooks, plus sso.
    let on_pro = strings(&[
        "advanced_permissions",
        "approval_workflows",
        "basic_analytics",
        "priority_support",
        "sso",
    ]);
    assert_eq!(seen.features, on_pro);
    assert_eq!(effective_on_subscription(&app, &acme.id).await, on_pro);

    // Business grants sso itself; the override stays and webhooks stays removed.
    put_on_plan(&app, &acme.id, "business").await;
    let seen = get(&app, &root, &acme.id).await.expect("get");
    assert_eq!(
        seen.features,
        strings(&[
            "advanced_permissions",
            "approval_workflows",
            "audit_export",
            "automation",
            "basic_analytics",
            "multi_site",
            "priority_support",
            "sso",
        ])
    );
    let stored: serde_json::Value =
        serde_json::from_str(&org_row(&app, &acme.id).await.feature_overrides).expect("JSON");
    assert_eq!(
        stored,
        serde_json::json!({ "sso": true, "webhooks": false })
    );
    // Clearing webhooks now lets business's default through.
    let features = clear_flag(&app, &root, &acme.id, "webhooks")
        .await
        .expect("clear");
    assert!(features.contains(&"webhooks".to_owned()));
    app.stop().await;
}

async fn only_operators_set_flags_and_bad_names_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let resellers = agency(&app, "Resellers").await;
    let acme = tenant(&app, "Acme Corp", &resellers.id).await;
    let version = org_row(&app, &acme.id).await.version;
    for token in [
        app.token("CONFIG_ADMIN", &acme.id),
        app.token("MEMBER", &acme.id),
        app.token("AGENCY_ADMIN", &resellers.id),
    ] {
        // Refused before the (bad) flag is looked at.
        for flag in ["sso", "Not A Flag"] {
            let denied = set_flag(&app, &token, &acme.id, flag, true)
                .await
                .expect_err("operators only");
            assert_eq!(denied.code(), Code::PermissionDenied);
            let denied = clear_flag(&app, &token, &acme.id, flag)
                .await
                .expect_err("operators only");
            assert_eq!(denied.code(), Code::PermissionDenied);
        }
    }
    for bad in ["", "Not A Flag", "9lives", &"x".repeat(65)] {
        let refused = set_flag(&app, &app.root(), &acme.id, bad, true)
            .await
            .expect_err("bad flag");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(violations(&refused), ["flag"], "{bad:?}");
        let refused = clear_flag(&app, &app.root(), &acme.id, bad)
            .await
            .expect_err("bad flag");
        assert_eq!(violations(&refused), ["flag"], "{bad:?}");
    }
    assert_eq!(org_row(&app, &acme.id).await.version, version);
    // Every operator role may set flags.
    let power_user = app.token("ROOT_POWER_USER", "internal");
    let system = app.token("SYSTEM", "");
    set_flag(&app, &power_user, &acme.id, "beta.voice-v2", true)
        .await
        .expect("root power user");
    let features = set_flag(&app, &system, &acme.id, "multi_site", true)
        .await
        .expect("system");
    assert_eq!(
        features,
        strings(&["basic_analytics", "beta.voice-v2", "multi_site"])
    );
    app.stop().await;
}
