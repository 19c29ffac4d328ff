//! The plan and add-on catalogue (SPEC §6): ListPlans and GetPlan without
//! authentication, the currency filter, paging, a catalogue file in place of the
//! built-in one, and ListAddonServices by category, filter and order.

use std::sync::Arc;

use tenantry::{domain::plans::Catalogue, proto};
use tonic::{Code, Request};

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::tenant,
};

/// ListPlans without credentials.
async fn list_plans(
    app: &TestApp,
    request: proto::ListPlansRequest,
) -> Result<proto::ListPlansResponse, tonic::Status> {
    app.subscriptions()
        .list_plans(Request::new(request))
        .await
        .map(|r| r.into_inner())
}

/// GetPlan without credentials.
async fn get_plan(app: &TestApp, plan_id: &str) -> Result<proto::Plan, tonic::Status> {
    let request = proto::GetPlanRequest {
        plan_id: plan_id.into(),
    };
    app.subscriptions()
        .get_plan(Request::new(request))
        .await
        .map(|r| r.into_inner().plan.expect("plan"))
}

/// ListAddonServices as `token`.
async fn list_addons(
    app: &TestApp,
    token: &str,
    request: proto::ListAddonServicesRequest,
) -> Result<proto::ListAddonServicesResponse, tonic::Status> {
    app.subscriptions()
        .list_addon_services(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

fn ids(plans: &[proto::Plan]) -> Vec<&str> {
    plans.iter().map(|p| p.id.as_str()).collect()
}

fn service_ids(services: &[proto::AddonService]) -> Vec<&str> {
    services.iter().map(|s| s.id.as_str()).collect()
}

/// The price of `plan` for `interval` as (currency, amount) pairs.
fn prices(plan: &proto::Plan, interval: proto::BillingInterval) -> Vec<(String, String)> {
    plan.prices
        .iter()
        .filter(|p| p.interval == interval as i32)
        .map(|p| {
            let m = p.price.clone().expect("price");
            (m.currency_code, m.amount)
        })
        .collect()
}

fn price_of(plan: &proto::Plan, currency: &str, interval: proto::BillingInterval) -> String {
    prices(plan, interval)
        .into_iter()
        .find(|(c, _)| c == currency)
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("{} has no {currency} price", plan.id))
}

on_both_backends!(
    the_builtin_catalogue_lists_six_plans_by_rank_without_credentials,
    the_currency_filter_keeps_only_that_currencys_plans_and_prices,
    plans_page_through_the_catalogue_once,
    get_plan_answers_not_found_and_invalid_argument,
    a_catalogue_file_replaces_the_builtin_plans,
    addon_services_list_by_category_filter_and_order,
);

async fn the_builtin_catalogue_lists_six_plans_by_rank_without_credentials(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let listed = list_plans(&app, proto::ListPlansRequest::default())
        .await
        .expect("ListPlans needs no credentials");
    assert_eq!(
        ids(&listed.plans),
        ["free", "basic", "pro", "team", "business", "enterprise"]
    );
    assert!(listed.next_page_token.is_empty());
    let ranks: Vec<i32> = listed.plans.iter().map(|p| p.tier_rank).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]),
        "ascending ranks: {ranks:?}"
    );
    let pro = &listed.plans[2];
    assert_eq!(pro.name, "Pro");
    assert_eq!(price_of(pro, "USD", proto::BillingInterval::Month), "29.00");
    assert_eq!(price_of(pro, "USD", proto::BillingInterval::Year), "290.00");
    assert_eq!(prices(pro, proto::BillingInterval::Month).len(), 6);
    let limits = pro.limits.expect("limits");
    assert_eq!(limits.max_agents, Some(10));
    assert_eq!(limits.max_logs_per_month, Some(50_000));
    assert_eq!(limits.log_retention_days, Some(30));
    assert_eq!(limits.max_team_members, Some(5));
    assert!(
        pro.default_features
            .contains(&"priority_support".to_owned())
    );
    let enterprise = &listed.plans[5];
    assert!(enterprise.prices.is_empty(), "custom-priced");
    let unlimited = enterprise.limits.expect("limits");
    assert_eq!(unlimited.max_agents, None);
    assert_eq!(unlimited.log_retention_days, Some(365));
    // GetPlan answers the same plan, also without credentials.
    assert_eq!(&get_plan(&app, "pro").await.expect("GetPlan"), pro);
    // With credentials it answers the same.
    let member = app.token("MEMBER", "internal");
    let with_token = app
        .subscriptions()
        .list_plans(authed(proto::ListPlansRequest::default(), &member))
        .await
        .expect("with a token")
        .into_inner();
    assert_eq!(with_token.plans, listed.plans);
    app.stop().await;
}

async fn the_currency_filter_keeps_only_that_currencys_plans_and_prices(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let eur = list_plans(
        &app,
        proto::ListPlansRequest {
            currency: "EUR".into(),
            ..Default::default()
        },
    )
    .await
    .expect("EUR");
    // Enterprise has no price at all, so it is not sold in EUR.
    assert_eq!(
        ids(&eur.plans),
        ["free", "basic", "pro", "team", "business"]
    );
    for plan in &eur.plans {
        assert_eq!(
            plan.prices.len(),
            2,
            "{}: month and year in EUR only",
            plan.id
        );
        assert!(
            plan.prices
                .iter()
                .all(|p| p.price.as_ref().expect("price").currency_code == "EUR")
        );
    }
    assert_eq!(
        price_of(&eur.plans[2], "EUR", proto::BillingInterval::Month),
        "27.00"
    );
    for bad in ["XYZ", "usd", "DOLLARS"] {
        let refused = list_plans(
            &app,
            proto::ListPlansRequest {
                currency: bad.into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("unknown currency");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(violations(&refused), ["currency"], "{bad}");
    }
    app.stop().await;
}

async fn plans_page_through_the_catalogue_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list_plans(
            &app,
            proto::ListPlansRequest {
                page_size: 4,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("page");
        pages += 1;
        assert!(page.plans.len() <= 4);
        seen.extend(page.plans.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 2);
    assert_eq!(
        seen,
        ["free", "basic", "pro", "team", "business", "enterprise"]
    );
    // A token is bound to its query: it is refused with another currency filter.
    let first = list_plans(
        &app,
        proto::ListPlansRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .expect("first page");
    let refused = list_plans(
        &app,
        proto::ListPlansRequest {
            page_size: 2,
            page_token: first.next_page_token,
            currency: "USD".into(),
        },
    )
    .await
    .expect_err("token of another query");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), ["page_token"]);
    let refused = list_plans(
        &app,
        proto::ListPlansRequest {
            page_size: -1,
            page_token: "garbage!!".into(),
            currency: "XYZ".into(),
        },
    )
    .await
    .expect_err("every bad field at once");
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(fields, ["currency", "page_size", "page_token"]);
    app.stop().await;
}

async fn get_plan_answers_not_found_and_invalid_argument(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let missing = get_plan(&app, "platinum").await.expect_err("unknown plan");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "NOT_FOUND");
    for bad in ["", "Pro", "pro plan", &"p".repeat(65)] {
        let refused = get_plan(&app, bad).await.expect_err("malformed id");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(violations(&refused), ["plan_id"], "{bad:?}");
    }
    let free = get_plan(&app, "free").await.expect("free");
    assert_eq!(free.tier_rank, 0);
    assert_eq!(free.limits.expect("limits").max_agents, Some(1));
    app.stop().await;
}

const CUSTOM_CATALOGUE: &str = r#"
[[plans]]
id = "free"
name = "Free"
tier_rank = 0
limits = { max_agents = 2 }
prices = { USD = { month = "0" }, GBP = { month = "0" } }

[[plans]]
id = "scale"
name = "Scale"
tier_rank = 20
description = "Priced in pounds only"
default_features = ["sso"]
prices = { GBP = { month = "99.50", year = "995.00" } }

[[plans]]
id = "starter"
name = "Starter"
tier_rank = 10
prices = { USD = { month = "5.00" } }
limits = { max_agents = 5, max_team_members = 2 }

[[addons]]
id = "white_glove"
name = "White-glove onboarding"
category = "support"
charge_type = "one_time"
prices = { USD = "750.00" }
"#;

async fn a_catalogue_file_replaces_the_builtin_plans(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("catalogue.toml");
    std::fs::write(&path, CUSTOM_CATALOGUE).expect("write catalogue");
    let catalogue = Catalogue::load(&path).expect("valid catalogue");
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.billing.catalogue = Arc::new(catalogue);
    })
    .await
    else {
        return;
    };
    let listed = list_plans(&app, proto::ListPlansRequest::default())
        .await
        .expect("plans");
    // Sorted by rank, not by their order in the file.
    assert_eq!(ids(&listed.plans), ["free", "starter", "scale"]);
    let starter = &listed.plans[1];
    assert_eq!(
        price_of(starter, "USD", proto::BillingInterval::Month),
        "5.00"
    );
    assert!(prices(starter, proto::BillingInterval::Year).is_empty());
    assert_eq!(starter.limits.expect("limits").max_team_members, Some(2));
    assert_eq!(starter.limits.expect("limits").max_organizations, None);
    let gbp = list_plans(
        &app,
        proto::ListPlansRequest {
            currency: "GBP".into(),
            ..Default::default()
        },
    )
    .await
    .expect("GBP");
    assert_eq!(ids(&gbp.plans), ["free", "scale"]);
    assert_eq!(
        price_of(&gbp.plans[1], "GBP", proto::BillingInterval::Month),
        "99.50"
    );
    let missing = get_plan(&app, "pro")
        .await
        .expect_err("not in this catalogue");
    assert_eq!(missing.code(), Code::NotFound);
    let member = app.token("MEMBER", "internal");
    let addons = list_addons(&app, &member, proto::ListAddonServicesRequest::default())
        .await
        .expect("addons");
    assert_eq!(service_ids(&addons.services), ["white_glove"]);
    assert_eq!(
        addons.services[0].charge_type,
        proto::AddonChargeType::OneTime as i32
    );
    app.stop().await;
}

async fn addon_services_list_by_category_filter_and_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let unauthenticated = app
        .subscriptions()
        .list_addon_services(Request::new(proto::ListAddonServicesRequest::default()))
        .await
        .expect_err("needs credentials");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let acme = tenant(&app, "Acme Corp", "").await;
    let member = app.token("MEMBER", &acme.id);
    let list = |request: proto::ListAddonServicesRequest| list_addons(&app, &member, request);

    // By name (default).
    let all = list(proto::ListAddonServicesRequest::default())
        .await
        .expect("all");
    assert_eq!(
        service_ids(&all.services),
        [
            "dedicated_success_manager",
            "extra_storage_100gb",
            "premium_ai_models",
            "premium_domain",
            "priority_support",
        ]
    );
    let ai = all
        .services
        .iter()
        .find(|s| s.id == "premium_ai_models")
        .expect("premium_ai_models");
    assert!(ai.requires_agreement);
    assert_eq!(ai.agreement_version, "2026-01");
    assert_eq!(ai.category, "ai_models");
    assert_eq!(ai.prices.len(), 6, "one price per currency");
    let usd = ai
        .prices
        .iter()
        .find(|m| m.currency_code == "USD")
        .expect("USD price");
    assert_eq!(usd.amount, "99.00");
    let support = all
        .services
        .iter()
        .find(|s| s.id == "priority_support")
        .expect("priority_support");
    assert!(!support.requires_agreement);
    assert!(support.agreement_version.is_empty());
    assert_eq!(support.charge_type, proto::AddonChargeType::Monthly as i32);

    let by_category = list(proto::ListAddonServicesRequest {
        category: "support".into(),
        ..Default::default()
    })
    .await
    .expect("support");
    assert_eq!(
        service_ids(&by_category.services),
        ["dedicated_success_manager", "priority_support"]
    );
    let none = list(proto::ListAddonServicesRequest {
        category: "telephony".into(),
        ..Default::default()
    })
    .await
    .expect("unknown category is just empty");
    assert!(none.services.is_empty());

    let cases = [
        ("requires_agreement = true", vec!["premium_ai_models"]),
        ("charge_type = ONE_TIME", vec!["premium_domain"]),
        (
            "charge_type = ADDON_CHARGE_TYPE_MONTHLY AND category != support",
            vec!["extra_storage_100gb", "premium_ai_models"],
        ),
        (
            "category = \"support\" AND requires_agreement = false",
            vec!["dedicated_success_manager", "priority_support"],
        ),
    ];
    for (filter, expected) in cases {
        let filtered = list(proto::ListAddonServicesRequest {
            filter: filter.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(service_ids(&filtered.services), expected, "{filter}");
    }

    // By category, ties by id, paged two at a time.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(proto::ListAddonServicesRequest {
            order_by: "category".into(),
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .expect("page");
        seen.extend(page.services.into_iter().map(|s| s.category));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        ["ai_models", "domains", "storage", "support", "support"]
    );
    let descending = list(proto::ListAddonServicesRequest {
        order_by: "name desc".into(),
        page_size: 1,
        ..Default::default()
    })
    .await
    .expect("desc");
    assert_eq!(service_ids(&descending.services), ["priority_support"]);

    let refused = list(proto::ListAddonServicesRequest {
        category: "Bad Category".into(),
        filter: "price = 3".into(),
        order_by: "price".into(),
        ..Default::default()
    })
    .await
    .expect_err("bad input");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(fields, ["category", "filter", "order_by"]);
    let refused = list(proto::ListAddonServicesRequest {
        filter: "charge_type = WEEKLY".into(),
        ..Default::default()
    })
    .await
    .expect_err("bad charge type");
    assert_eq!(violations(&refused), ["filter"]);
    app.stop().await;
}
