//! Hostile input against a running server: huge strings and repeated fields, a 4 MB
//! message, invalid UTF-8 in metadata, NaN-like amounts, SQL metacharacters in filters,
//! orders, slugs and page tokens, out-of-range enums and bad request ids. Every call is
//! refused cleanly (never INTERNAL or UNKNOWN; bad input is INVALID_ARGUMENT with an
//! `ErrorInfo` reason and the field's violation), nothing is written, and the server
//! still serves afterwards. The `bugs` module reproduces what the corpus found.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tenantry::{
    domain::paging::{self, Cursor},
    proto::{
        self, AssetType, TransferMode, UsageMetric as M,
        organization_service_client::OrganizationServiceClient,
    },
    storage::entities::{
        addresses, agents, api_keys, audit_entries, credit_transactions, external_assets,
        idempotency_records, invitations, organizations, outbox_events, usage_events,
    },
};
use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};

use crate::{
    helpers::{Backend, TestApp, authed, postgres_url, reason, violations},
    on_both_backends,
    organizations::{create, named, named_on, own_connection, register_agent, rows, usd},
    usage::{event, system},
};

on_both_backends!(
    huge_strings_are_refused_and_write_nothing,
    huge_repeated_fields_are_refused_and_write_nothing,
    a_4_mb_message_is_refused_cleanly_and_writes_nothing,
    hostile_metadata_is_refused_or_ignored_and_writes_nothing,
    nan_like_and_out_of_range_amounts_are_refused_and_write_nothing,
    sql_metacharacters_are_plain_data,
    bad_enums_and_request_ids_are_refused_and_write_nothing,
);

/// Row counts of every table a refused request could have written.
async fn snapshot(app: &TestApp) -> Vec<u64> {
    vec![
        rows::<organizations::Entity>(app).await,
        rows::<agents::Entity>(app).await,
        rows::<audit_entries::Entity>(app).await,
        rows::<idempotency_records::Entity>(app).await,
        rows::<credit_transactions::Entity>(app).await,
        rows::<usage_events::Entity>(app).await,
        rows::<external_assets::Entity>(app).await,
        rows::<addresses::Entity>(app).await,
        rows::<invitations::Entity>(app).await,
        rows::<api_keys::Entity>(app).await,
        rows::<outbox_events::Entity>(app).await,
    ]
}

/// The status of a call that must fail, checked to be a clean refusal: never INTERNAL,
/// UNKNOWN, DATA_LOSS or UNAVAILABLE.
fn refused<T>(outcome: Result<T, Status>, case: &str) -> Status {
    let Err(status) = outcome else {
        panic!("{case}: accepted");
    };
    let bad = [
        Code::Internal,
        Code::Unknown,
        Code::DataLoss,
        Code::Unavailable,
    ];
    let message: String = status.message().chars().take(300).collect();
    assert!(
        !bad.contains(&status.code()),
        "{case}: {:?} {message}",
        status.code()
    );
    status
}

/// Asserts INVALID_ARGUMENT with an `ErrorInfo` reason and a violation of `field`.
fn assert_invalid<T>(outcome: Result<T, Status>, field: &str, case: &str) {
    if let Some(problem) = check_invalid(outcome, field, case) {
        panic!("{problem}");
    }
}

/// What is wrong, if anything, with an answer that should be INVALID_ARGUMENT with an
/// `ErrorInfo` reason and a violation of `field`.
fn check_invalid<T>(outcome: Result<T, Status>, field: &str, case: &str) -> Option<String> {
    let status = match outcome {
        Ok(_) => return Some(format!("{case}: accepted")),
        Err(status) => status,
    };
    let fields = violations(&status);
    let clean = status.code() == Code::InvalidArgument
        && !reason(&status).is_empty()
        && fields.iter().any(|f| f == field);
    let message: String = status.message().chars().take(200).collect();
    let code = status.code();
    (!clean).then(|| format!("{case}: {code:?} {message:?}, violations {fields:?}, not {field}"))
}

/// Asserts the server still answers a plain read.
async fn still_serves(app: &TestApp) {
    let request = proto::GetOrganizationRequest {
        organization_id: "internal".into(),
    };
    let outcome = app
        .orgs()
        .get_organization(authed(request, &app.root()))
        .await;
    outcome.expect("the server still serves");
}

/// CreateOrganization of an organization named `name`, adjusted by `edit`.
fn org_with(
    name: &str,
    edit: impl FnOnce(&mut proto::Organization),
) -> proto::CreateOrganizationRequest {
    let mut organization = named(name);
    edit(&mut organization);
    proto::CreateOrganizationRequest {
        organization: Some(organization),
        ..Default::default()
    }
}

fn list(filter: &str, order_by: &str, page_token: &str) -> proto::ListOrganizationsRequest {
    proto::ListOrganizationsRequest {
        filter: filter.into(),
        order_by: order_by.into(),
        page_token: page_token.into(),
        page_size: 0,
    }
}

fn gift(org: &str, amount: &str, reason: &str, request_id: &str) -> proto::GiftCreditsRequest {
    proto::GiftCreditsRequest {
        organization_id: org.into(),
        amount: Some(usd(amount)),
        reason: reason.into(),
        request_id: request_id.into(),
    }
}

fn usage(org: &str, event: proto::UsageEvent) -> proto::RecordUsageRequest {
    proto::RecordUsageRequest {
        organization_id: org.into(),
        event: Some(event),
    }
}

async fn huge_strings_are_refused_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme")).await;
    let before = snapshot(&app).await;
    let big = "x".repeat(1 << 20);
    let creates = [
        ("name", org_with(&big, |_| {}), "organization.name"),
        (
            "description",
            org_with("A", |o| o.description = big.clone()),
            "organization.description",
        ),
        (
            "slug",
            org_with("A", |o| o.slug = big.clone()),
            "organization.slug",
        ),
        (
            "email",
            org_with("A", |o| o.contact_email = format!("{big}@x.io")),
            "organization.contact_email",
        ),
        (
            "contact name",
            org_with("A", |o| o.contact_name = big.clone()),
            "organization.contact_name",
        ),
        (
            "request id",
            proto::CreateOrganizationRequest {
                request_id: big.clone(),
                ..org_with("A", |_| {})
            },
            "request_id",
        ),
    ];
    for (case, request, field) in creates {
        let outcome = app.orgs().create_organization(authed(request, &root)).await;
        assert_invalid(outcome, field, case);
    }
    let agent = proto::RegisterAgentRequest {
        organization_id: acme.id.clone(),
        agent: Some(proto::Agent {
            name: big.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let outcome = app.orgs().register_agent(authed(agent, &root)).await;
    assert_invalid(outcome, "agent.name", "agent name");
    let get = proto::GetOrganizationRequest {
        organization_id: big.clone(),
    };
    let outcome = app.orgs().get_organization(authed(get, &root)).await;
    assert_invalid(outcome, "organization_id", "organization id");
    for (case, request) in [
        ("filter", list(&big, "", "")),
        ("order_by", list("", &big, "")),
        ("page_token", list("", "", &big)),
    ] {
        let outcome = app.orgs().list_organizations(authed(request, &root)).await;
        assert_invalid(outcome, case, case);
    }
    let outcome = app
        .billing()
        .gift_credits(authed(gift(&acme.id, "1.00", &big, "g"), &root))
        .await;
    assert_invalid(outcome, "reason", "gift reason");
    let slug = proto::CheckSlugAvailabilityRequest { slug: big.clone() };
    match app
        .orgs()
        .check_slug_availability(authed(slug, &root))
        .await
    {
        Ok(answer) => assert!(
            !answer.into_inner().available,
            "a 1 MB slug is not available"
        ),
        Err(status) => assert_invalid(Err::<(), _>(status), "slug", "check slug"),
    }
    assert_eq!(snapshot(&app).await, before, "huge strings wrote something");
    still_serves(&app).await;
    app.stop().await;
}

async fn huge_repeated_fields_are_refused_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named_on("Acme", "pro")).await;
    let other = create(&app, &root, named_on("Other", "pro")).await;
    let agent = register_agent(&app, &root, &acme.id, "Bot").await;
    let sys = system(&app);
    let before = snapshot(&app).await;
    let mut wide = event("wide", &agent.id, M::Tokens, 1, "0.01");
    wide.dimensions = (0..100_000)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let outcome = app
        .billing()
        .record_usage(authed(usage(&acme.id, wide), &sys))
        .await;
    assert_invalid(outcome, "event.dimensions", "100k dimensions");
    let events: Vec<proto::UsageEvent> = (0..10_000)
        .map(|i| event(&format!("e{i}"), &agent.id, M::Tokens, 1, "0.01"))
        .collect();
    let batch = proto::RecordUsageBatchRequest {
        organization_id: acme.id.clone(),
        events: events.clone(),
    };
    let outcome = app.billing().record_usage_batch(authed(batch, &sys)).await;
    assert_invalid(outcome, "events", "10k events in a batch");
    let message = proto::StreamUsageRequest {
        organization_id: acme.id.clone(),
        events,
    };
    let stream = tokio_stream::iter(vec![message]);
    match app.billing().stream_usage(authed(stream, &sys)).await {
        Ok(response) => assert_eq!(response.into_inner().accepted_count, 0, "10k streamed"),
        Err(status) => assert_invalid(Err::<(), _>(status), "events", "10k events streamed"),
    }
    let item = proto::AssetTransferItem {
        asset_type: AssetType::Credits as i32,
        mode: TransferMode::Move as i32,
        credit_amount: Some(usd("1.00")),
        ..Default::default()
    };
    let bulk = proto::TransferAssetsBulkRequest {
        source_organization_id: acme.id.clone(),
        target_organization_id: other.id.clone(),
        items: vec![item; 10_000],
        request_id: "bulk-1".into(),
        ..Default::default()
    };
    let outcome = app
        .transfers()
        .transfer_assets_bulk(authed(bulk, &root))
        .await;
    assert_invalid(outcome, "items", "10k bulk items");
    let ids = proto::TransferAssetsRequest {
        source_organization_id: acme.id.clone(),
        target_organization_id: other.id.clone(),
        asset_type: AssetType::Agents as i32,
        mode: TransferMode::Move as i32,
        ids: (0..100_000).map(|i| format!("agt_{i}")).collect(),
        request_id: "ids-1".into(),
        ..Default::default()
    };
    let outcome = app.transfers().transfer_assets(authed(ids, &root)).await;
    assert_invalid(outcome, "ids", "100k ids");
    let alerts = org_with("Alerted", |o| {
        o.billing_alerts = Some(proto::BillingAlerts {
            alert_thresholds: (0..100_000).collect(),
            ..Default::default()
        })
    });
    let outcome = app.orgs().create_organization(authed(alerts, &root)).await;
    let field = "organization.billing_alerts.alert_thresholds";
    assert_invalid(outcome, field, "100k thresholds");
    assert_eq!(
        snapshot(&app).await,
        before,
        "huge repeated fields wrote something"
    );
    still_serves(&app).await;
    app.stop().await;
}

async fn a_4_mb_message_is_refused_cleanly_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let before = snapshot(&app).await;
    for (case, size) in [
        ("just under 4 MiB", (4 << 20) - 1024),
        ("over 4 MiB", (4 << 20) + 1),
    ] {
        let request = org_with("Big", |o| o.description = "d".repeat(size));
        let status = refused(
            app.orgs().create_organization(authed(request, &root)).await,
            case,
        );
        // Over the size limit: RESOURCE_EXHAUSTED (the limits layer) or OUT_OF_RANGE
        // (tonic's own decoder limit); under it, validation's INVALID_ARGUMENT.
        match status.code() {
            Code::InvalidArgument => {
                assert!(violations(&status).contains(&"organization.description".to_owned()))
            }
            Code::ResourceExhausted | Code::OutOfRange => {}
            other => panic!("{case}: unexpected {other:?}: {}", status.message()),
        }
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "a 4 MB message wrote something"
    );
    still_serves(&app).await;
    app.stop().await;
}

/// CreateOrganization through `client` with raw metadata `(key, bytes)` only.
async fn create_with(
    mut client: OrganizationServiceClient<Channel>,
    name: &str,
    metadata: &[(&'static str, &[u8])],
) -> Result<proto::CreateOrganizationResponse, Status> {
    let mut request = Request::new(org_with(name, |_| {}));
    for (key, value) in metadata {
        let value = MetadataValue::try_from(*value).expect("sendable metadata bytes");
        request.metadata_mut().insert(*key, value);
    }
    client
        .create_organization(request)
        .await
        .map(|r| r.into_inner())
}

/// The request ids of the audit entries about `target_id`.
async fn audit_request_ids(app: &TestApp, target_id: &str) -> Vec<String> {
    let entries = audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(target_id))
        .all(app.store.db())
        .await
        .expect("read audit entries");
    entries.into_iter().map(|e| e.request_id).collect()
}

async fn hostile_metadata_is_refused_or_ignored_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let before = snapshot(&app).await;
    let bearer = |tail: &[u8]| [b"Bearer ".as_slice(), tail].concat();
    let (tab, bare) = (format!("Bearer\t{root}"), root.as_bytes());
    let truncated = bearer(&bare[..bare.len() - 5]);
    let (utf8, big) = (bearer(b"\xc3\x28\xa0\xa1"), bearer(&[b'a'; 12_000]));
    let (sql, empty) = (bearer(b"ak_'; DROP TABLE api_keys; --"), bearer(b""));
    let cases: [(&str, &'static str, &[u8]); 13] = [
        ("invalid UTF-8", "authorization", b"\xff\xfe\xfd"),
        ("bearer invalid UTF-8", "authorization", &utf8),
        ("no scheme", "authorization", bare),
        ("basic", "authorization", b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
        ("tab separated", "authorization", tab.as_bytes()),
        ("empty bearer", "authorization", &empty),
        ("12 KB token", "authorization", &big),
        ("truncated token", "authorization", &truncated),
        ("SQL API key", "authorization", &sql),
        ("x-api-key invalid UTF-8", "x-api-key", b"ak_\xff\xfe"),
        ("x-api-key SQL", "x-api-key", b"' OR 1=1 --"),
        ("x-api-key empty", "x-api-key", b""),
        ("x-api-key 12 KB", "x-api-key", &[b'k'; 12_000]),
    ];
    for (case, key, value) in cases {
        let status = refused(
            create_with(app.orgs(), "Metadata", &[(key, value)]).await,
            case,
        );
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(reason(&status), "UNAUTHENTICATED", "{case}");
    }
    // Beyond the HTTP/2 header list limit the transport refuses the call (and may close
    // the connection, hence one of its own each).
    let huge = bearer(&[b'a'; 100_000]);
    for key in ["authorization", "x-api-key"] {
        let outcome = create_with(own_connection(&app), "Metadata", &[(key, &huge)]).await;
        let status = refused(outcome, key);
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "100 KB {key}: {status:?}"
        );
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "refused credentials wrote something"
    );
    // Unusable request ids and trace contexts are ignored (the audit entry gets a
    // generated request id); a printable request id is kept verbatim, as data.
    let auth = bearer(bare);
    let drop = "'; DROP TABLE audit_entries; --";
    let proceeding: [(&str, &'static str, &[u8], Option<&str>); 6] = [
        (
            "request id invalid UTF-8",
            "x-request-id",
            b"\xff\xfe",
            None,
        ),
        ("request id 10 KB", "x-request-id", &[b'r'; 10_000], None),
        (
            "request id SQL",
            "x-request-id",
            drop.as_bytes(),
            Some(drop),
        ),
        (
            "traceparent invalid UTF-8",
            "traceparent",
            b"00-\xff-\xfe-01",
            None,
        ),
        ("traceparent garbage", "traceparent", b"ff-zz-yy-xx", None),
        ("traceparent 10 KB", "traceparent", &[b'0'; 10_000], None),
    ];
    for (i, (case, key, value, kept)) in proceeding.into_iter().enumerate() {
        let metadata = [("authorization", auth.as_slice()), (key, value)];
        let created = create_with(app.orgs(), &format!("Traced {i}"), &metadata).await;
        let created = created.unwrap_or_else(|s| panic!("{case}: {s:?}"));
        let audit = audit_request_ids(&app, &created.organization.expect("organization").id).await;
        assert_eq!(audit.len(), 1, "{case}: {audit:?}");
        match kept {
            Some(verbatim) => assert_eq!(audit[0], verbatim, "{case}"),
            None if key == "x-request-id" => {
                assert!(
                    uuid::Uuid::parse_str(&audit[0]).is_ok(),
                    "{case}: {audit:?}"
                )
            }
            None => {}
        }
    }
    still_serves(&app).await;
    app.stop().await;
}

async fn nan_like_and_out_of_range_amounts_are_refused_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named_on("Acme", "pro")).await;
    let agent = register_agent(&app, &root, &acme.id, "Bot").await;
    let sys = system(&app);
    let before = snapshot(&app).await;
    let amounts = [
        "NaN",
        "nan",
        "inf",
        "-Infinity",
        "1e999",
        "1e-7",
        "0.0000001",
        "99999999999999999999",
        "-1",
        "-0.01",
        "0x10",
        "1_000",
        " 1",
        "1 ",
        "1,50",
        "",
        "+",
        "-",
        ".",
        "١٢",
        "１",
        "1.2.3",
        "--1",
        "'; DROP TABLE credit_transactions; --",
    ];
    for (i, amount) in amounts.into_iter().enumerate() {
        let request = gift(&acme.id, amount, "hostile", &format!("gift-{i}"));
        let outcome = app.billing().gift_credits(authed(request, &root)).await;
        assert_invalid(outcome, "amount.amount", &format!("gift {amount:?}"));
        let cost = event(&format!("e{i}"), &agent.id, M::Tokens, 1, amount);
        let outcome = app
            .billing()
            .record_usage(authed(usage(&acme.id, cost), &sys))
            .await;
        assert_invalid(outcome, "event.cost", &format!("cost {amount:?}"));
        let rated = org_with("Rated", |o| o.billing_rate_per_agent = Some(usd(amount)));
        let outcome = app.orgs().create_organization(authed(rated, &root)).await;
        let field = "organization.billing_rate_per_agent.amount";
        assert_invalid(outcome, field, &format!("rate {amount:?}"));
    }
    // "-0" is zero: refused where the amount must be positive.
    let outcome = app
        .billing()
        .gift_credits(authed(gift(&acme.id, "-0", "x", "z"), &root))
        .await;
    assert_invalid(outcome, "amount.amount", "gift -0");
    assert_eq!(snapshot(&app).await, before, "bad amounts wrote something");
    still_serves(&app).await;
    app.stop().await;
}

/// A page token for ListOrganizations, forged with the service's own (public) encoding
/// and the fingerprint of `filter` and `order_by`.
fn forged_token(filter: &str, order_by: &str, key: &str, id: &str) -> String {
    let q = paging::fingerprint(&[filter, order_by]);
    paging::encode(&Cursor {
        q,
        k: Some(key.into()),
        id: id.into(),
    })
}

async fn sql_metacharacters_are_plain_data(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let real = create(&app, &root, named("100% Real_Deal")).await;
    create(&app, &root, named("Acme")).await;
    let before = snapshot(&app).await;
    let names = |filter: &str, order_by: &str, token: &str| {
        let (request, mut orgs) = (authed(list(filter, order_by, token), &root), app.orgs());
        async move {
            let response = orgs.list_organizations(request).await?.into_inner();
            Ok::<_, Status>(
                response
                    .organizations
                    .into_iter()
                    .map(|o| o.name)
                    .collect::<Vec<_>>(),
            )
        }
    };
    let forged_id = forged_token("", "", "acme", "' OR 1=1 --");
    for (case, filter, order_by, token, field) in [
        (
            "drop in filter",
            "'; DROP TABLE organizations; --",
            "",
            "",
            "filter",
        ),
        ("or in filter", "name = 'x' OR 1=1", "", "", "filter"),
        ("or after a term", "kind = TENANT OR 1=1", "", "", "filter"),
        ("comment", "kind = TENANT -- x", "", "", "filter"),
        (
            "quoted parent",
            "parent_id = 'internal' OR 1=1",
            "",
            "",
            "filter",
        ),
        (
            "drop in order",
            "",
            "name; DROP TABLE organizations",
            "",
            "order_by",
        ),
        ("subquery order", "", "(SELECT 1)", "", "order_by"),
        (
            "drop in token",
            "",
            "",
            "'; DROP TABLE organizations; --",
            "page_token",
        ),
        ("forged token id", "", "", &forged_id, "page_token"),
    ] {
        assert_invalid(names(filter, order_by, token).await, field, case);
    }
    // Quoted, the same characters are plain data: no match, no error, nothing dropped.
    let quoted = [
        "'; DROP TABLE organizations; --",
        "' OR '1'='1",
        "%",
        "_",
        "\\\\",
        "аcme",
        "ａｃｍｅ",
    ];
    for prefix in quoted {
        let filter = format!("prefix = \"{prefix}\"");
        let found = names(&filter, "", "")
            .await
            .unwrap_or_else(|s| panic!("{prefix:?}: {s:?}"));
        assert!(found.is_empty(), "{prefix:?} matched {found:?}");
    }
    // LIKE wildcards in a prefix are literal.
    for (prefix, matches) in [
        ("100%", true),
        ("100% real_", true),
        ("1_0", false),
        ("%real", false),
    ] {
        let found = names(&format!("prefix = \"{prefix}\""), "", "")
            .await
            .expect(prefix);
        let want = if matches {
            vec![real.name.clone()]
        } else {
            vec![]
        };
        assert_eq!(found, want, "{prefix:?}");
    }
    // A forged position with SQL in its key is only a position.
    let uuid = uuid::Uuid::nil().to_string();
    let forged = forged_token("", "", "'); DROP TABLE organizations; --", &uuid);
    names("", "", &forged)
        .await
        .expect("forged key is bound as a value");
    for slug in [
        "acme'--",
        "acme; DROP TABLE organizations",
        "ａｃｍｅ",
        "аcme",
    ] {
        let request = proto::CheckSlugAvailabilityRequest { slug: slug.into() };
        match app
            .orgs()
            .check_slug_availability(authed(request, &root))
            .await
        {
            Ok(a) => assert!(!a.into_inner().available, "{slug:?} is no slug"),
            Err(status) => assert_invalid(Err::<(), _>(status), "slug", slug),
        }
        let get = proto::GetOrganizationRequest {
            organization_id: slug.into(),
        };
        let outcome = app.orgs().get_organization(authed(get, &root)).await;
        assert_invalid(outcome, "organization_id", slug);
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "SQL metacharacters wrote something"
    );
    still_serves(&app).await;
    app.stop().await;
}

async fn bad_enums_and_request_ids_are_refused_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named_on("Acme", "pro")).await;
    let other = create(&app, &root, named_on("Other", "pro")).await;
    let agent = register_agent(&app, &root, &acme.id, "Bot").await;
    let sys = system(&app);
    let before = snapshot(&app).await;
    for value in [42, -1, i32::MAX, i32::MIN] {
        let request = org_with("Kind", |o| o.kind = value);
        let outcome = app.orgs().create_organization(authed(request, &root)).await;
        assert_invalid(outcome, "organization.kind", &format!("kind {value}"));
        let mut bad = event(&format!("m{value}"), &agent.id, M::Tokens, 1, "0.01");
        bad.metric = value;
        let outcome = app
            .billing()
            .record_usage(authed(usage(&acme.id, bad), &sys))
            .await;
        assert_invalid(outcome, "event.metric", &format!("metric {value}"));
        let invite = proto::InviteMemberRequest {
            organization_id: acme.id.clone(),
            email: "new@example.com".into(),
            role: value,
            ..Default::default()
        };
        let outcome = app.orgs().invite_member(authed(invite, &root)).await;
        assert_invalid(outcome, "role", &format!("role {value}"));
        let transfer = proto::TransferAssetsRequest {
            source_organization_id: acme.id.clone(),
            target_organization_id: other.id.clone(),
            asset_type: value,
            mode: value,
            request_id: format!("enum-{value}"),
            ..Default::default()
        };
        let outcome = app
            .transfers()
            .transfer_assets(authed(transfer, &root))
            .await;
        assert_invalid(outcome, "asset_type", &format!("asset type {value}"));
    }
    let long = "r".repeat(129);
    for (case, id) in [
        ("129 chars", long.as_str()),
        ("control", "r\u{1}"),
        ("NUL", "r\u{0}"),
        ("newline", "r\nid"),
    ] {
        let outcome = app
            .billing()
            .gift_credits(authed(gift(&acme.id, "1.00", "x", id), &root))
            .await;
        assert_invalid(outcome, "request_id", &format!("gift request id {case}"));
        let request = proto::CreateOrganizationRequest {
            request_id: id.into(),
            ..org_with("Keyed", |_| {})
        };
        let outcome = app.orgs().create_organization(authed(request, &root)).await;
        assert_invalid(outcome, "request_id", &format!("create request id {case}"));
    }
    let outcome = app
        .billing()
        .gift_credits(authed(gift(&acme.id, "1.00", "x", ""), &root))
        .await;
    assert_invalid(outcome, "request_id", "empty gift request id");
    assert_eq!(
        snapshot(&app).await,
        before,
        "bad enums or request ids wrote something"
    );
    still_serves(&app).await;
    app.stop().await;
}

/// Reproductions of bugs this corpus found, fixed since: NUL characters reaching the
/// database (INTERNAL on PostgreSQL), and huge input echoed into error replies.
mod bugs {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_nul_characters_are_refused_before_the_database() {
        super::nul_characters_are_refused_before_the_database(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_nul_characters_are_refused_before_the_database() {
        if postgres_url().is_some() {
            super::nul_characters_are_refused_before_the_database(Backend::Postgres).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_huge_input_is_not_echoed_into_errors() {
        super::huge_input_is_not_echoed_into_errors(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_huge_input_is_not_echoed_into_errors() {
        if postgres_url().is_some() {
            super::huge_input_is_not_echoed_into_errors(Backend::Postgres).await;
        }
    }
}

/// NUL is valid in a proto string but not in PostgreSQL text: every string that may
/// reach a query must be refused first, as names and descriptions already are.
async fn nul_characters_are_refused_before_the_database(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named_on("Acme", "pro")).await;
    let before = snapshot(&app).await;
    let nul = "a\u{0}b";
    let quoted = |field: &str| format!("{field} = \"{nul}\"");
    let mut problems = Vec::new();
    let outcome = app
        .orgs()
        .list_organizations(authed(list(&quoted("prefix"), "", ""), &root))
        .await;
    problems.extend(check_invalid(outcome, "filter", "organizations prefix"));
    let token = forged_token("", "", nul, &uuid::Uuid::nil().to_string());
    let outcome = app
        .orgs()
        .list_organizations(authed(list("", "", &token), &root))
        .await;
    problems.extend(check_invalid(outcome, "page_token", "page token key"));
    let audit = proto::ListAuditEventsRequest {
        organization_id: acme.id.clone(),
        filter: quoted("actor_id"),
        ..Default::default()
    };
    let outcome = app.orgs().list_audit_events(authed(audit, &root)).await;
    problems.extend(check_invalid(outcome, "filter", "audit actor_id"));
    let assets = proto::ListAssetsRequest {
        organization_id: acme.id.clone(),
        filter: quoted("external_id"),
        ..Default::default()
    };
    let outcome = app.transfers().list_assets(authed(assets, &root)).await;
    problems.extend(check_invalid(outcome, "filter", "assets external_id"));
    let transactions = proto::ListTransactionsRequest {
        organization_id: acme.id.clone(),
        filter: quoted("request_id"),
        ..Default::default()
    };
    let outcome = app
        .billing()
        .list_transactions(authed(transactions, &root))
        .await;
    problems.extend(check_invalid(outcome, "filter", "transactions request_id"));
    let outcome = app
        .billing()
        .gift_credits(authed(gift(&acme.id, "1.00", nul, "g"), &root))
        .await;
    problems.extend(check_invalid(outcome, "reason", "gift reason"));
    if snapshot(&app).await != before {
        problems.push("NUL input wrote something".to_owned());
    }
    still_serves(&app).await;
    app.stop().await;
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Bad input must get a bounded error: echoing a megabyte back, or one violation per
/// element of a 100k list, makes trailers that HTTP/2 clients refuse.
async fn huge_input_is_not_echoed_into_errors(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme")).await;
    let before = snapshot(&app).await;
    let big = "9".repeat(1 << 20);
    let update = |paths: Vec<String>| proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: acme.id.clone(),
            ..named("Acme")
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    let rate = org_with("Rated", |o| o.billing_rate_per_agent = Some(usd(&big)));
    let emails = org_with("Alerted", |o| {
        o.billing_alerts = Some(proto::BillingAlerts {
            alert_emails: (0..100_000).map(|i| format!("bad{i}")).collect(),
            ..Default::default()
        })
    });
    let many: Vec<String> = (0..100_000).map(|i| format!("p{i}")).collect();
    // Each on a connection of its own: the failure closes the connection.
    let mut problems = Vec::new();
    let outcome = own_connection(&app)
        .create_organization(authed(rate, &root))
        .await;
    let field = "organization.billing_rate_per_agent.amount";
    problems.extend(check_invalid(outcome, field, "1 MB amount"));
    let outcome = own_connection(&app)
        .create_organization(authed(emails, &root))
        .await;
    let field = "organization.billing_alerts.alert_emails";
    problems.extend(check_invalid(outcome, field, "100k bad alert emails"));
    let outcome = own_connection(&app)
        .update_organization(authed(update(vec![big.clone()]), &root))
        .await;
    problems.extend(check_invalid(outcome, "update_mask", "1 MB mask path"));
    let outcome = own_connection(&app)
        .update_organization(authed(update(many), &root))
        .await;
    problems.extend(check_invalid(outcome, "update_mask", "100k mask paths"));
    if snapshot(&app).await != before {
        problems.push("huge input wrote something".to_owned());
    }
    still_serves(&app).await;
    app.stop().await;
    assert!(problems.is_empty(), "{problems:#?}");
}
