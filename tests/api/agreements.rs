//! Service agreements: a service with terms (the built-in premium_ai_models, terms
//! 2026-01) cannot be bought before its current terms are accepted; acceptance of the
//! current version only, idempotent by request id, superseding the previous one (also
//! under concurrency); revocation refuses new purchases again; an agreement for an
//! older terms version does not count; listing, validation and tenancy.

use std::{collections::BTreeMap, sync::Arc};

use futures::future::join_all;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait};
use tenantry::{
    domain::{
        ids::{self, IdKind},
        money::Currency,
        plans::{Addon, Catalogue, ChargeType, Terms},
    },
    proto,
    storage::entities::{payment_intents, service_agreements},
};
use tonic::{Code, Status};

use crate::{
    addons::{CREDITS, GATEWAY, order, purchase, service_debits, status, try_purchase},
    credits::{balance_amount, gift},
    helpers::{Backend, TestApp, authed, metadata, reason, violations},
    on_both_backends,
    organizations::{audit_actions, org_uuid, tenant},
};

const AI: &str = "premium_ai_models";
const VERSION: &str = "2026-01";

fn acceptance(
    org_id: &str,
    service_id: &str,
    version: &str,
    request_id: &str,
) -> proto::AcceptAgreementRequest {
    proto::AcceptAgreementRequest {
        organization_id: org_id.into(),
        service_id: service_id.into(),
        version: version.into(),
        metadata: BTreeMap::from([
            ("signer".to_owned(), "Ada Lovelace".to_owned()),
            ("ip".to_owned(), "203.0.113.7".to_owned()),
        ]),
        request_id: request_id.into(),
    }
}

async fn try_accept(
    app: &TestApp,
    token: &str,
    request: proto::AcceptAgreementRequest,
) -> Result<proto::ServiceAgreement, Status> {
    app.subscriptions()
        .accept_agreement(authed(request, token))
        .await
        .map(|r| r.into_inner().agreement.expect("agreement"))
}

async fn accept(
    app: &TestApp,
    token: &str,
    org_id: &str,
    request_id: &str,
) -> proto::ServiceAgreement {
    try_accept(app, token, acceptance(org_id, AI, VERSION, request_id))
        .await
        .expect("accept agreement")
}

async fn try_revoke(
    app: &TestApp,
    token: &str,
    org_id: &str,
    service_id: &str,
    etag: &str,
) -> Result<proto::ServiceAgreement, Status> {
    let request = proto::RevokeAgreementRequest {
        organization_id: org_id.into(),
        service_id: service_id.into(),
        reason: "no longer needed".into(),
        etag: etag.into(),
    };
    app.subscriptions()
        .revoke_agreement(authed(request, token))
        .await
        .map(|r| r.into_inner().agreement.expect("agreement"))
}

async fn get(
    app: &TestApp,
    token: &str,
    org_id: &str,
    service_id: &str,
) -> Result<proto::GetAgreementResponse, Status> {
    let request = proto::GetAgreementRequest {
        organization_id: org_id.into(),
        service_id: service_id.into(),
    };
    app.subscriptions()
        .get_agreement(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn list(
    app: &TestApp,
    org_id: &str,
    filter: &str,
    order_by: &str,
    page_size: i32,
    page_token: &str,
) -> Result<proto::ListAgreementsResponse, Status> {
    let request = proto::ListAgreementsRequest {
        organization_id: org_id.into(),
        page_size,
        page_token: page_token.into(),
        filter: filter.into(),
        order_by: order_by.into(),
    };
    app.subscriptions()
        .list_agreements(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner())
}

fn agreement_status(agreement: &proto::ServiceAgreement) -> proto::ServiceAgreementStatus {
    proto::ServiceAgreementStatus::try_from(agreement.status).expect("status")
}

async fn accepted(app: &TestApp, org_id: &str) -> bool {
    let request = proto::GetServicePricingRequest {
        organization_id: org_id.into(),
        service_id: AI.into(),
    };
    app.subscriptions()
        .get_service_pricing(authed(request, &app.root()))
        .await
        .expect("pricing")
        .into_inner()
        .agreement_accepted
}

async fn premium_ai_models_needs_the_current_terms_accepted_first(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    gift(&app, &acme.id, "500.00").await;

    // Without an agreement: refused, from credits or through the gateway, and nothing
    // is written (not even a payment intent).
    for source in [CREDITS, GATEWAY] {
        let refused = try_purchase(&app, &admin, order(&acme.id, AI, 1, source, "ai-1"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "AGREEMENT_REQUIRED");
        assert_eq!(metadata(&refused, "service_id").as_deref(), Some(AI));
        assert_eq!(metadata(&refused, "version").as_deref(), Some(VERSION));
    }
    assert_eq!(balance_amount(&app, &acme.id).await, "500.00");
    let intents = payment_intents::Entity::find()
        .count(app.store.db())
        .await
        .unwrap();
    assert_eq!(intents, 0);

    let current = get(&app, &admin, &acme.id, AI).await.expect("get");
    assert_eq!(current.terms.expect("terms").version, VERSION);
    assert!(current.agreement.is_none());

    // Only the current version can be accepted.
    let refused = try_accept(&app, &admin, acceptance(&acme.id, AI, "2025-06", "acc-0"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "TERMS_VERSION_MISMATCH");
    assert_eq!(
        metadata(&refused, "current_version").as_deref(),
        Some(VERSION)
    );

    let agreement = accept(&app, &admin, &acme.id, "acc-1").await;
    assert!(agreement.id.starts_with("agr_"), "{}", agreement.id);
    assert_eq!(
        agreement_status(&agreement),
        proto::ServiceAgreementStatus::Active
    );
    assert_eq!(agreement.version, VERSION);
    assert!(agreement.current_version);
    assert_eq!(agreement.service_id, AI);
    assert_eq!(agreement.organization_id, acme.id);
    assert_eq!(agreement.accepted_by, "user:config_admin-user");
    assert!(agreement.accept_time.is_some());
    assert_eq!(agreement.request_id, "acc-1");
    assert_eq!(agreement.metadata["signer"], "Ada Lovelace");
    assert_eq!(agreement.metadata["ip"], "203.0.113.7");
    assert!(agreement.revoked_by.is_empty() && agreement.revoke_time.is_none());
    // A retry answers the same agreement.
    let again = accept(&app, &admin, &acme.id, "acc-1").await;
    assert_eq!(again, agreement);
    assert_eq!(
        list(&app, &acme.id, "", "", 0, "")
            .await
            .unwrap()
            .agreements
            .len(),
        1
    );
    assert_eq!(
        audit_actions(&app, &agreement.id).await,
        ["AcceptAgreement"]
    );
    assert!(accepted(&app, &acme.id).await);
    let current = get(&app, &app.token("MEMBER", &acme.id), &acme.id, AI)
        .await
        .expect("get");
    assert_eq!(current.agreement.as_ref(), Some(&agreement));

    // Now it can be bought; the purchase records the agreement.
    let bought = purchase(&app, &admin, order(&acme.id, AI, 2, CREDITS, "ai-1")).await;
    assert_eq!(status(&bought), proto::ServicePurchaseStatus::Active);
    assert_eq!(bought.agreement_id, agreement.id);
    assert_eq!(bought.amount.as_ref().unwrap().amount, "198.00");
    assert_eq!(balance_amount(&app, &acme.id).await, "302.00");
    app.stop().await;
}

async fn reaccepting_supersedes_and_revoking_refuses_new_purchases(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    gift(&app, &acme.id, "500.00").await;
    let first = accept(&app, &admin, &acme.id, "acc-1").await;
    let bought = purchase(&app, &admin, order(&acme.id, AI, 1, CREDITS, "ai-1")).await;
    let second = accept(&app, &app.root(), &acme.id, "acc-2").await;
    assert_ne!(second.id, first.id);
    assert_eq!(second.accepted_by, "user:root_admin-user");
    let all = list(&app, &acme.id, "", "", 0, "").await.expect("list");
    let states: Vec<(String, proto::ServiceAgreementStatus)> = all
        .agreements
        .iter()
        .map(|a| (a.id.clone(), agreement_status(a)))
        .collect();
    assert_eq!(
        states,
        [
            (second.id.clone(), proto::ServiceAgreementStatus::Active),
            (first.id.clone(), proto::ServiceAgreementStatus::Superseded),
        ]
    );
    let current = get(&app, &admin, &acme.id, AI).await.expect("get");
    assert_eq!(current.agreement.expect("agreement").id, second.id);

    // A stale etag is refused; the current one revokes.
    let stale = try_revoke(&app, &admin, &acme.id, AI, "\"0\"")
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let revoked = try_revoke(&app, &admin, &acme.id, AI, &second.etag)
        .await
        .expect("revoke");
    assert_eq!(revoked.id, second.id);
    assert_eq!(
        agreement_status(&revoked),
        proto::ServiceAgreementStatus::Revoked
    );
    assert_eq!(revoked.revoked_by, "user:config_admin-user");
    assert!(revoked.revoke_time.is_some());
    assert_eq!(revoked.revoke_reason, "no longer needed");
    assert_ne!(revoked.etag, second.etag);
    assert_eq!(
        audit_actions(&app, &second.id).await,
        ["AcceptAgreement", "RevokeAgreement"]
    );
    let current = get(&app, &admin, &acme.id, AI).await.expect("get");
    assert!(current.agreement.is_none());
    assert!(current.terms.is_some());
    assert!(!accepted(&app, &acme.id).await);
    let again = try_revoke(&app, &admin, &acme.id, AI, "")
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    // New purchases need a new acceptance; the earlier purchase stays active.
    let refused = try_purchase(&app, &admin, order(&acme.id, AI, 1, CREDITS, "ai-2"))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "AGREEMENT_REQUIRED");
    assert_eq!(service_debits(&app, &acme.id).await.len(), 1);
    let request = proto::ListPurchasedServicesRequest {
        organization_id: acme.id.clone(),
        ..Default::default()
    };
    let purchases = app
        .subscriptions()
        .list_purchased_services(authed(request, &admin))
        .await
        .expect("list purchases")
        .into_inner()
        .purchases;
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0].id, bought.id);
    assert_eq!(status(&purchases[0]), proto::ServicePurchaseStatus::Active);
    let third = accept(&app, &admin, &acme.id, "acc-3").await;
    let rebought = purchase(&app, &admin, order(&acme.id, AI, 1, CREDITS, "ai-2")).await;
    assert_eq!(rebought.agreement_id, third.id);
    app.stop().await;
}

async fn concurrent_acceptances_leave_one_active_agreement(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let accepted_all = join_all((0..8).map(|i| {
        try_accept(
            &app,
            &admin,
            acceptance(&acme.id, AI, VERSION, &format!("acc-{i}")),
        )
    }))
    .await;
    assert!(accepted_all.iter().all(Result::is_ok), "{accepted_all:?}");
    let all = list(&app, &acme.id, "", "", 0, "").await.expect("list");
    assert_eq!(all.agreements.len(), 8);
    let active = list(&app, &acme.id, "status = ACTIVE", "", 0, "")
        .await
        .expect("list");
    assert_eq!(active.agreements.len(), 1);
    // The survivor is the newest acceptance.
    assert_eq!(active.agreements[0].id, all.agreements[0].id);
    app.stop().await;
}

/// The built-in catalogue plus a service whose terms are at version `v2`.
fn catalogue_with_crm() -> Catalogue {
    let mut catalogue = Catalogue::builtin();
    catalogue.addons.push(Addon {
        id: "crm_sync".into(),
        name: "CRM sync".into(),
        category: "integrations".into(),
        description: "Two-way sync with a third-party CRM".into(),
        prices: vec![(Currency::Usd, 5_000_000)],
        charge_type: ChargeType::OneTime,
        terms: Some(Terms {
            version: "v2".into(),
            title: "CRM data processing".into(),
            text: "The CRM vendor processes synced records.".into(),
            url: "https://example.com/crm-terms".into(),
            effective_time: 0,
        }),
    });
    catalogue
}

async fn an_agreement_for_older_terms_does_not_count(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.billing.catalogue = Arc::new(catalogue_with_crm());
    })
    .await
    else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    gift(&app, &acme.id, "100.00").await;
    // The organization accepted v1 before the vendor published v2.
    let old = service_agreements::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        organization_id: Set(org_uuid(&acme.id)),
        service_id: Set("crm_sync".into()),
        terms_version: Set("v1".into()),
        status: Set("ACTIVE".into()),
        metadata: Set("{}".into()),
        accepted_by: Set("user:someone".into()),
        accept_time: Set(1_000_000),
        revoked_by: Set(String::new()),
        revoke_time: Set(None),
        revoke_reason: Set(String::new()),
        request_id: Set("old".into()),
        update_time: Set(1_000_000),
        version: Set(1),
    }
    .insert(app.store.db())
    .await
    .expect("insert old agreement");
    let old_id = ids::encode(IdKind::Agreement, old.id);
    let current = get(&app, &admin, &acme.id, "crm_sync").await.expect("get");
    let shown = current.agreement.expect("agreement");
    assert_eq!(shown.id, old_id);
    assert!(!shown.current_version);
    assert_eq!(
        current.terms.expect("terms").url,
        "https://example.com/crm-terms"
    );
    let refused = try_purchase(
        &app,
        &admin,
        order(&acme.id, "crm_sync", 1, CREDITS, "crm-1"),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&refused), "AGREEMENT_REQUIRED");
    assert_eq!(metadata(&refused, "version").as_deref(), Some("v2"));

    let renewed = try_accept(
        &app,
        &admin,
        acceptance(&acme.id, "crm_sync", "v2", "crm-acc"),
    )
    .await
    .expect("accept");
    assert!(renewed.current_version);
    let bought = purchase(
        &app,
        &admin,
        order(&acme.id, "crm_sync", 1, CREDITS, "crm-1"),
    )
    .await;
    assert_eq!(bought.agreement_id, renewed.id);
    assert_eq!(bought.amount.as_ref().unwrap().amount, "5.00");
    let superseded = list(&app, &acme.id, "status = SUPERSEDED", "", 0, "")
        .await
        .expect("list");
    assert_eq!(superseded.agreements.len(), 1);
    assert_eq!(superseded.agreements[0].id, old_id);
    assert!(!superseded.agreements[0].current_version);
    app.stop().await;
}

async fn agreements_filter_order_and_page(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.billing.catalogue = Arc::new(catalogue_with_crm());
    })
    .await
    else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let other = tenant(&app, "Other", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let ai_1 = accept(&app, &admin, &acme.id, "a-1").await;
    let crm = try_accept(&app, &admin, acceptance(&acme.id, "crm_sync", "v2", "c-1"))
        .await
        .expect("accept");
    let ai_2 = accept(&app, &admin, &acme.id, "a-2").await;
    try_revoke(&app, &admin, &acme.id, "crm_sync", "")
        .await
        .expect("revoke");
    accept(
        &app,
        &app.token("CONFIG_ADMIN", &other.id),
        &other.id,
        "o-1",
    )
    .await;
    let ids = |page: &proto::ListAgreementsResponse| -> Vec<String> {
        page.agreements.iter().map(|a| a.id.clone()).collect()
    };

    let newest = list(&app, &acme.id, "", "", 0, "").await.expect("list");
    assert_eq!(
        ids(&newest),
        [ai_2.id.clone(), crm.id.clone(), ai_1.id.clone()]
    );
    assert!(newest.agreements.iter().all(|a| a.current_version));
    let oldest = list(&app, &acme.id, "", "accept_time asc", 0, "")
        .await
        .expect("list");
    assert_eq!(
        ids(&oldest),
        [ai_1.id.clone(), crm.id.clone(), ai_2.id.clone()]
    );
    let by_service = list(&app, &acme.id, "", "service_id desc", 0, "")
        .await
        .expect("list");
    assert_eq!(
        by_service.agreements[0].service_id, AI,
        "premium_ai_models sorts after crm_sync"
    );
    assert_eq!(by_service.agreements[2].id, crm.id);
    let ai_only = list(&app, &acme.id, "service_id = premium_ai_models", "", 0, "")
        .await
        .expect("list");
    assert_eq!(ids(&ai_only), [ai_2.id.clone(), ai_1.id.clone()]);
    let revoked = list(
        &app,
        &acme.id,
        "status = SERVICE_AGREEMENT_STATUS_REVOKED",
        "",
        0,
        "",
    )
    .await
    .expect("list");
    assert_eq!(ids(&revoked), vec![crm.id.clone()]);
    let not_active = list(
        &app,
        &acme.id,
        "status != ACTIVE AND service_id = premium_ai_models",
        "",
        0,
        "",
    )
    .await
    .expect("list");
    assert_eq!(ids(&not_active), vec![ai_1.id.clone()]);

    // Pages of one, in either order, cover everything once.
    for order_by in ["", "service_id", "service_id desc", "accept_time asc"] {
        let expected = ids(&list(&app, &acme.id, "", order_by, 0, "")
            .await
            .expect("list"));
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(&app, &acme.id, "", order_by, 1, &token)
                .await
                .expect("page");
            seen.extend(ids(&page));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, expected, "order {order_by:?}");
        assert_eq!(seen.len(), 3);
    }
    let bad = list(&app, &acme.id, "version = v2", "name", 0, "")
        .await
        .unwrap_err();
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(fields, ["filter", "order_by"]);
    let bad = list(&app, &acme.id, "status = GONE", "", 0, "")
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["filter"]);
    app.stop().await;
}

async fn agreement_input_is_checked_all_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let mut crowded: BTreeMap<String, String> = (0..17)
        .map(|i| (format!("k{i:02}"), "v".to_owned()))
        .collect();
    crowded.insert(String::new(), "empty key".into());
    crowded.insert("k00".into(), "x".repeat(513));
    let bad = proto::AcceptAgreementRequest {
        organization_id: acme.id.clone(),
        service_id: String::new(),
        version: String::new(),
        metadata: crowded,
        request_id: String::new(),
    };
    let refused = try_accept(&app, &admin, bad).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields = violations(&refused);
    fields.sort();
    fields.dedup();
    assert_eq!(
        fields,
        [
            "metadata",
            "metadata[k00]",
            "request_id",
            "service_id",
            "version"
        ]
    );
    let long_key = BTreeMap::from([("k".repeat(65), "v".to_owned())]);
    let refused = try_accept(
        &app,
        &admin,
        proto::AcceptAgreementRequest {
            metadata: long_key,
            ..acceptance(&acme.id, AI, VERSION, "long-key")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&refused), ["metadata"]);
    // Sixteen entries of the longest sizes are fine.
    let full: BTreeMap<String, String> = (0..16)
        .map(|i| (format!("{i:0>64}"), "v".repeat(512)))
        .collect();
    let full_request = proto::AcceptAgreementRequest {
        metadata: full,
        ..acceptance(&acme.id, AI, VERSION, "full")
    };
    let agreement = try_accept(&app, &admin, full_request.clone())
        .await
        .expect("accept");
    assert_eq!(agreement.metadata.len(), 16);
    // A retry is recognised whatever order its map is sent in.
    for _ in 0..3 {
        let retry = proto::AcceptAgreementRequest {
            metadata: full_request.metadata.clone().into_iter().collect(),
            ..full_request.clone()
        };
        let again = try_accept(&app, &admin, retry).await.expect("retry");
        assert_eq!(again, agreement);
    }
    let changed = proto::AcceptAgreementRequest {
        metadata: BTreeMap::from([("signer".to_owned(), "Someone Else".to_owned())]),
        ..full_request
    };
    let refused = try_accept(&app, &admin, changed).await.unwrap_err();
    assert_eq!(violations(&refused), ["request_id"]);

    // A service without terms has nothing to accept; an unknown one is not found.
    let refused = try_accept(
        &app,
        &admin,
        acceptance(&acme.id, "priority_support", "1", "p"),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&refused), "NO_TERMS");
    let none = get(&app, &admin, &acme.id, "priority_support")
        .await
        .expect("get");
    assert!(none.terms.is_none() && none.agreement.is_none());
    let refused = try_accept(&app, &admin, acceptance(&acme.id, "time_machine", "1", "t"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let refused = get(&app, &admin, &acme.id, "time_machine")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    let request = proto::RevokeAgreementRequest {
        organization_id: acme.id.clone(),
        service_id: String::new(),
        reason: "r".repeat(501),
        etag: String::new(),
    };
    let refused = app
        .subscriptions()
        .revoke_agreement(authed(request, &admin))
        .await
        .unwrap_err();
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(fields, ["reason", "service_id"]);
    let refused = try_revoke(&app, &admin, &acme.id, "priority_support", "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    app.stop().await;
}

async fn agreements_stay_within_their_organization(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let rival = tenant(&app, "Rival", "").await;
    let rival_admin = app.token("CONFIG_ADMIN", &rival.id);
    let agreement = accept(&app, &app.token("CONFIG_ADMIN", &acme.id), &acme.id, "a").await;
    let refused = get(&app, &rival_admin, &acme.id, AI).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = try_revoke(&app, &rival_admin, &acme.id, AI, "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = try_accept(
        &app,
        &rival_admin,
        acceptance(&acme.id, AI, VERSION, "steal"),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // A member reads but does not accept or revoke.
    let member = app.token("MEMBER", &acme.id);
    let refused = try_revoke(&app, &member, &acme.id, AI, "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let seen = get(&app, &member, &acme.id, AI).await.expect("get");
    assert_eq!(seen.agreement.expect("agreement").id, agreement.id);
    // The rival's own view has no agreement.
    let own = get(&app, &rival_admin, &rival.id, AI).await.expect("get");
    assert!(own.agreement.is_none());
    app.stop().await;
}

on_both_backends!(
    premium_ai_models_needs_the_current_terms_accepted_first,
    reaccepting_supersedes_and_revoking_refuses_new_purchases,
    concurrent_acceptances_leave_one_active_agreement,
    an_agreement_for_older_terms_does_not_count,
    agreements_filter_order_and_page,
    agreement_input_is_checked_all_at_once,
    agreements_stay_within_their_organization,
);
