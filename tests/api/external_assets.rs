//! The external asset registry: RegisterAsset, ListAssets (type filter, filters,
//! orders, pages) and DeregisterAsset, with duplicates, validation and permissions.

use std::collections::{BTreeMap, HashSet};

use sea_orm::{EntityTrait, PaginatorTrait};
use tenantry::{
    domain::ids::{self, IdKind},
    proto,
    storage::entities::external_assets,
};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{audit_actions, create, named},
};

on_both_backends!(
    an_operator_registers_an_asset_that_members_can_list,
    a_duplicate_registration_is_refused_and_a_retry_replays,
    bad_registrations_name_every_field_and_write_nothing,
    only_operators_register_and_deregister,
    lists_filter_by_type_and_fields,
    lists_order_and_page_through_everything_once,
    deregistering_deletes_the_asset_and_checks_the_etag,
);

fn request(org: &str, external_type: &str, external_id: &str) -> proto::RegisterAssetRequest {
    proto::RegisterAssetRequest {
        organization_id: org.into(),
        external_type: external_type.into(),
        external_id: external_id.into(),
        display_name: format!("{external_type} {external_id}"),
        attributes: BTreeMap::new(),
        request_id: format!("reg-{external_type}-{external_id}")
            .chars()
            .take(100)
            .collect(),
    }
}

async fn register(
    app: &TestApp,
    token: &str,
    request: proto::RegisterAssetRequest,
) -> Result<proto::ExternalAsset, tonic::Status> {
    app.transfers()
        .register_asset(authed(request, token))
        .await
        .map(|r| r.into_inner().asset.expect("asset"))
}

async fn list(
    app: &TestApp,
    token: &str,
    request: proto::ListAssetsRequest,
) -> Result<proto::ListAssetsResponse, tonic::Status> {
    app.transfers()
        .list_assets(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn deregister(
    app: &TestApp,
    token: &str,
    org: &str,
    asset_id: &str,
    etag: &str,
) -> Result<(), tonic::Status> {
    app.transfers()
        .deregister_asset(authed(
            proto::DeregisterAssetRequest {
                organization_id: org.into(),
                asset_id: asset_id.into(),
                etag: etag.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

async fn listed_ids(
    app: &TestApp,
    org: &str,
    external_type: &str,
    filter: &str,
    order_by: &str,
) -> Vec<String> {
    list(
        app,
        &app.root(),
        proto::ListAssetsRequest {
            organization_id: org.into(),
            external_type: external_type.into(),
            filter: filter.into(),
            order_by: order_by.into(),
            page_size: 500,
            ..Default::default()
        },
    )
    .await
    .expect("list")
    .assets
    .into_iter()
    .map(|a| a.external_id)
    .collect()
}

async fn asset_rows(app: &TestApp) -> u64 {
    external_assets::Entity::find()
        .count(app.store.db())
        .await
        .expect("count assets")
}

async fn an_operator_registers_an_asset_that_members_can_list(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Acme")).await.id;
    let system = app.token("SYSTEM", "internal");
    let mut attributes = BTreeMap::new();
    attributes.insert("region".to_owned(), "eu-west".to_owned());
    attributes.insert("number".to_owned(), "+44 20 7946 0000".to_owned());
    let asset = register(
        &app,
        &system,
        proto::RegisterAssetRequest {
            attributes: attributes.clone(),
            display_name: "  Main line  ".into(),
            ..request(&org, "phone_number", "pn-42")
        },
    )
    .await
    .expect("register");
    assert!(asset.id.starts_with("ast_"));
    assert_eq!(asset.organization_id, org);
    assert_eq!(asset.external_type, "phone_number");
    assert_eq!(asset.external_id, "pn-42");
    assert_eq!(asset.display_name, "Main line");
    assert_eq!(asset.attributes, attributes);
    assert_eq!(asset.registered_by, "system:system-user");
    assert!(asset.create_time.is_some());
    assert_eq!(asset.create_time, asset.update_time);
    assert_eq!(asset.etag, "\"1\"");

    let member = app.token("MEMBER", &org);
    let listed = list(
        &app,
        &member,
        proto::ListAssetsRequest {
            organization_id: org.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("members may list");
    assert_eq!(listed.assets, vec![asset.clone()]);
    assert!(listed.next_page_token.is_empty());
    assert_eq!(audit_actions(&app, &asset.id).await, ["RegisterAsset"]);

    // Another organization's list does not show it.
    let other = create(&app, &app.root(), named("Other")).await.id;
    assert!(listed_ids(&app, &other, "", "", "").await.is_empty());
    app.stop().await;
}

async fn a_duplicate_registration_is_refused_and_a_retry_replays(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Acme")).await.id;
    let first = register(&app, &app.root(), request(&org, "site", "s-1"))
        .await
        .expect("register");
    let replay = register(&app, &app.root(), request(&org, "site", "s-1"))
        .await
        .expect("same request id replays");
    assert_eq!(first, replay);
    let duplicate = register(
        &app,
        &app.root(),
        proto::RegisterAssetRequest {
            request_id: "another".into(),
            ..request(&org, "site", "s-1")
        },
    )
    .await
    .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert_eq!(reason(&duplicate), "ASSET_ALREADY_REGISTERED");
    assert_eq!(asset_rows(&app).await, 1);
    // The same external id is fine under another type or in another organization.
    register(&app, &app.root(), request(&org, "knowledge_base", "s-1"))
        .await
        .expect("another type");
    let other = create(&app, &app.root(), named("Other")).await.id;
    register(
        &app,
        &app.root(),
        proto::RegisterAssetRequest {
            request_id: "in-other".into(),
            ..request(&other, "site", "s-1")
        },
    )
    .await
    .expect("another organization");
    assert_eq!(asset_rows(&app).await, 3);
    app.stop().await;
}

async fn bad_registrations_name_every_field_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Acme")).await.id;
    let mut attributes: BTreeMap<String, String> =
        (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    attributes.insert("long".into(), "x".repeat(1025));
    let refused = register(
        &app,
        &app.root(),
        proto::RegisterAssetRequest {
            organization_id: org.clone(),
            external_type: "Phone-Number".into(),
            external_id: "bad\u{7}id".into(),
            display_name: "d".repeat(201),
            attributes,
            request_id: String::new(),
        },
    )
    .await
    .expect_err("invalid");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: HashSet<String> = violations(&refused).into_iter().collect();
    let expected: HashSet<String> = [
        "external_type",
        "external_id",
        "display_name",
        "attributes",
        "attributes[long]",
        "request_id",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(fields, expected);

    for (external_type, external_id) in [
        ("", "x"),
        ("knowledge_base", ""),
        (&*"t".repeat(65), "x"),
        ("site", &*"i".repeat(257)),
        ("_site", "x"),
        ("site__x", "x"),
        ("9site", "x"),
    ] {
        let refused = register(&app, &app.root(), request(&org, external_type, external_id))
            .await
            .expect_err("invalid");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{external_type} {external_id}"
        );
    }
    let mut empty_key = BTreeMap::new();
    empty_key.insert(String::new(), "v".to_owned());
    let refused = register(
        &app,
        &app.root(),
        proto::RegisterAssetRequest {
            attributes: empty_key,
            ..request(&org, "site", "x")
        },
    )
    .await
    .expect_err("empty key");
    assert_eq!(violations(&refused), ["attributes"]);
    assert_eq!(asset_rows(&app).await, 0);

    // The limits themselves are fine.
    let full: BTreeMap<String, String> = (0..32)
        .map(|i| (format!("{i:0>64}"), "v".repeat(1024)))
        .collect();
    register(
        &app,
        &app.root(),
        proto::RegisterAssetRequest {
            attributes: full,
            display_name: "d".repeat(200),
            ..request(&org, &"t".repeat(64), &"i".repeat(256))
        },
    )
    .await
    .expect("at the limits");
    app.stop().await;
}

async fn only_operators_register_and_deregister(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Acme")).await.id;
    for role in ["MEMBER", "CONFIG_ADMIN"] {
        let token = app.token(role, &org);
        let refused = register(&app, &token, request(&org, "site", "s-1"))
            .await
            .expect_err("not an operator");
        assert_eq!(refused.code(), Code::PermissionDenied, "{role}");
    }
    let power = app.token("ROOT_POWER_USER", "internal");
    let asset = register(&app, &power, request(&org, "site", "s-1"))
        .await
        .expect("power user registers");
    let member = app.token("MEMBER", &org);
    let refused = deregister(&app, &member, &org, &asset.id, "")
        .await
        .expect_err("members may not deregister");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let foreign = create(&app, &app.root(), named("Other")).await.id;
    let foreign_member = app.token("MEMBER", &foreign);
    let refused = list(
        &app,
        &foreign_member,
        proto::ListAssetsRequest {
            organization_id: org.clone(),
            ..Default::default()
        },
    )
    .await
    .expect_err("another organization");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(asset_rows(&app).await, 1);
    app.stop().await;
}

async fn populate(app: &TestApp, org: &str) {
    for (external_type, external_id, display_name) in [
        ("site", "s-1", "Zeta site"),
        ("phone_number", "p-1", "Alpha line"),
        ("site", "s-2", "Beta site"),
        ("knowledge_base", "k-1", "Manual"),
        ("phone_number", "p-2", "Gamma line"),
    ] {
        register(
            app,
            &app.root(),
            proto::RegisterAssetRequest {
                display_name: display_name.into(),
                ..request(org, external_type, external_id)
            },
        )
        .await
        .expect("register");
    }
}

async fn lists_filter_by_type_and_fields(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Acme")).await.id;
    populate(&app, &org).await;
    assert_eq!(
        listed_ids(&app, &org, "", "", "").await,
        ["p-2", "k-1", "s-2", "p-1", "s-1"],
        "newest first by default"
    );
    assert_eq!(listed_ids(&app, &org, "site", "", "").await, ["s-2", "s-1"]);
    assert_eq!(
        listed_ids(&app, &org, "", "external_type = phone_number", "").await,
        ["p-2", "p-1"]
    );
    assert_eq!(
        listed_ids(&app, &org, "", "external_id = \"k-1\"", "").await,
        ["k-1"]
    );
    assert_eq!(
        listed_ids(
            &app,
            &org,
            "",
            "external_type != site AND external_id != p-2",
            ""
        )
        .await,
        ["k-1", "p-1"]
    );
    assert_eq!(
        listed_ids(
            &app,
            &org,
            "site",
            "create_time >= 2000-01-01T00:00:00Z",
            ""
        )
        .await,
        ["s-2", "s-1"]
    );
    assert!(
        listed_ids(&app, &org, "", "create_time < 2000-01-01T00:00:00Z", "")
            .await
            .is_empty()
    );

    for (external_type, filter, order_by, field) in [
        ("Bad-Type", "", "", "external_type"),
        ("", "display_name = x", "", "filter"),
        ("", "create_time >= yesterday", "", "filter"),
        ("", "", "external_id", "order_by"),
    ] {
        let refused = list(
            &app,
            &app.root(),
            proto::ListAssetsRequest {
                organization_id: org.clone(),
                external_type: external_type.into(),
                filter: filter.into(),
                order_by: order_by.into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("invalid");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(violations(&refused), [field]);
    }
    app.stop().await;
}

async fn lists_order_and_page_through_everything_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Acme")).await.id;
    populate(&app, &org).await;
    assert_eq!(
        listed_ids(&app, &org, "", "", "create_time asc").await,
        ["s-1", "p-1", "s-2", "k-1", "p-2"]
    );
    assert_eq!(
        listed_ids(&app, &org, "", "", "display_name").await,
        ["p-1", "s-2", "p-2", "k-1", "s-1"]
    );
    assert_eq!(
        listed_ids(&app, &org, "", "", "display_name desc").await,
        ["s-1", "k-1", "p-2", "s-2", "p-1"]
    );
    // Ties (same type) follow the id, i.e. registration order.
    assert_eq!(
        listed_ids(&app, &org, "", "", "external_type").await,
        ["k-1", "p-1", "p-2", "s-1", "s-2"]
    );

    for order_by in ["", "create_time asc", "external_type", "display_name desc"] {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = list(
                &app,
                &app.root(),
                proto::ListAssetsRequest {
                    organization_id: org.clone(),
                    page_size: 2,
                    page_token: token.clone(),
                    order_by: order_by.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("page");
            pages += 1;
            assert!(page.assets.len() <= 2);
            seen.extend(page.assets.into_iter().map(|a| a.external_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3, "{order_by}");
        assert_eq!(
            seen,
            listed_ids(&app, &org, "", "", order_by).await,
            "{order_by}"
        );
    }
    // A token belongs to its query.
    let first = list(
        &app,
        &app.root(),
        proto::ListAssetsRequest {
            organization_id: org.clone(),
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .expect("page");
    let refused = list(
        &app,
        &app.root(),
        proto::ListAssetsRequest {
            organization_id: org.clone(),
            page_size: 2,
            page_token: first.next_page_token,
            order_by: "display_name".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("token of another query");
    assert_eq!(violations(&refused), ["page_token"]);
    app.stop().await;
}

async fn deregistering_deletes_the_asset_and_checks_the_etag(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Acme")).await.id;
    let other = create(&app, &app.root(), named("Other")).await.id;
    let asset = register(&app, &app.root(), request(&org, "site", "s-1"))
        .await
        .expect("register");
    let kept = register(&app, &app.root(), request(&org, "site", "s-2"))
        .await
        .expect("register");

    let stale = deregister(&app, &app.root(), &org, &asset.id, "\"7\"")
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    let elsewhere = deregister(&app, &app.root(), &other, &asset.id, "")
        .await
        .expect_err("not that organization's");
    assert_eq!(elsewhere.code(), Code::NotFound);
    let unknown = ids::encode(IdKind::ExternalAsset, uuid::Uuid::now_v7());
    let missing = deregister(&app, &app.root(), &org, &unknown, "")
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    let bad = deregister(&app, &app.root(), &org, "site-1", "")
        .await
        .expect_err("not an asset id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad), ["asset_id"]);
    assert_eq!(asset_rows(&app).await, 2);

    let system = app.token("SYSTEM", "internal");
    deregister(&app, &system, &org, &asset.id, &asset.etag)
        .await
        .expect("deregister");
    assert_eq!(asset_rows(&app).await, 1);
    assert_eq!(listed_ids(&app, &org, "", "", "").await, [kept.external_id]);
    assert_eq!(
        audit_actions(&app, &asset.id).await,
        ["RegisterAsset", "DeregisterAsset"]
    );
    let again = deregister(&app, &system, &org, &asset.id, "")
        .await
        .expect_err("gone");
    assert_eq!(again.code(), Code::NotFound);
    // Its identity can be registered again.
    register(
        &app,
        &app.root(),
        proto::RegisterAssetRequest {
            request_id: "again".into(),
            ..request(&org, "site", "s-1")
        },
    )
    .await
    .expect("register again");
    app.stop().await;
}
