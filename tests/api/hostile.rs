//! Hostile input against a running server: huge strings and repeated fields, a 4 MB
//! message, invalid UTF-8 in metadata, NaN-like amounts, SQL metacharacters in filters,
//! orders, slugs and page tokens, out-of-range enums and bad request ids. Every call is
//! refused cleanly (never INTERNAL or UNKNOWN; bad input is INVALID_ARGUMENT with an
//! `ErrorInfo` reason and the field's violation), nothing is written, and the server
//! still serves afterwards. The `bugs` module reproduces what the corpus found.
//!
//! The corpus is table-driven: each test builds a list of [`Case`]s (a name, the call,
//! what it must get back) and [`Fixture::refuse_all`] runs them in turn, checks each
//! answer, then that nothing was written and that the server still serves. It reports
//! every failing case by name at once rather than stopping at the first.

use futures::future::BoxFuture;
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
use tonic::{Code, Request, Response, Status, metadata::MetadataValue, transport::Channel};

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

// ---------------------------------------------------------------------------
// The corpus runner
// ---------------------------------------------------------------------------

/// What a hostile case must get back. Every case must also be a clean refusal: never
/// INTERNAL, UNKNOWN, DATA_LOSS or UNAVAILABLE (what a panic or a database error turns
/// into).
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// INVALID_ARGUMENT with an `ErrorInfo` reason and a violation of this field.
    Invalid(&'static str),
    /// UNAUTHENTICATED with the `ErrorInfo` reason UNAUTHENTICATED.
    Unauthenticated,
    /// RESOURCE_EXHAUSTED: beyond the HTTP/2 header list limit.
    ResourceExhausted,
    /// Near or over the 4 MiB message limit: under it, validation's INVALID_ARGUMENT as
    /// [`Expect::Invalid`] for this field; over it, RESOURCE_EXHAUSTED (the limits layer)
    /// or OUT_OF_RANGE (tonic's own decoder limit).
    TooLarge(&'static str),
}

/// How a call that did not fail answered.
enum Answer {
    /// The hostile input was accepted: a failure.
    Accepted,
    /// A success that harmlessly says no (a 1 MB slug "is not available", a stream of
    /// 10k events "accepted none"), as good as the expected refusal.
    Declined,
}

/// One hostile request: its name (in every failure message), the call (not yet sent),
/// and what it must get back.
struct Case {
    name: String,
    expect: Expect,
    call: BoxFuture<'static, Result<Answer, Status>>,
}

impl Case {
    /// A case whose every success is a failure.
    fn new<R: Send + 'static>(
        name: impl Into<String>,
        expect: Expect,
        call: impl Future<Output = Result<Response<R>, Status>> + Send + 'static,
    ) -> Case {
        Case::declinable(name, expect, call, |_| false)
    }

    /// A case that may also succeed with an answer that `declined` says is a "no".
    fn declinable<R: Send + 'static>(
        name: impl Into<String>,
        expect: Expect,
        call: impl Future<Output = Result<Response<R>, Status>> + Send + 'static,
        declined: impl FnOnce(R) -> bool + Send + 'static,
    ) -> Case {
        let call = async move {
            let answer = call.await?.into_inner();
            Ok(if declined(answer) {
                Answer::Declined
            } else {
                Answer::Accepted
            })
        };
        Case {
            name: name.into(),
            expect,
            call: Box::pin(call),
        }
    }
}

/// The call `client.method(request)`, not yet sent; the client and request move into it.
macro_rules! rpc {
    ($client:expr, $method:ident, $request:expr) => {{
        let (mut client, request) = ($client, $request);
        async move { client.$method(request).await }
    }};
}

/// What is wrong, if anything, with `outcome` as the answer to a case expecting `expect`.
fn verdict(outcome: Result<Answer, Status>, expect: Expect) -> Option<String> {
    let status = match outcome {
        Ok(Answer::Declined) => return None,
        Ok(Answer::Accepted) => return Some("accepted".to_owned()),
        Err(status) => status,
    };
    let code = status.code();
    let message: String = status.message().chars().take(300).collect();
    let unclean = [
        Code::Internal,
        Code::Unknown,
        Code::DataLoss,
        Code::Unavailable,
    ];
    if unclean.contains(&code) {
        return Some(format!("not a clean refusal: {code:?} {message:?}"));
    }
    let (reason, fields) = (reason(&status), violations(&status));
    let invalid = |field: &str| {
        code == Code::InvalidArgument && !reason.is_empty() && fields.iter().any(|f| f == field)
    };
    let expected = match expect {
        Expect::Invalid(field) => invalid(field),
        Expect::Unauthenticated => code == Code::Unauthenticated && reason == "UNAUTHENTICATED",
        Expect::ResourceExhausted => code == Code::ResourceExhausted,
        Expect::TooLarge(field) => {
            matches!(code, Code::ResourceExhausted | Code::OutOfRange) || invalid(field)
        }
    };
    let found = format!("{code:?} {message:?}, reason {reason:?}, violations {fields:?}");
    (!expected).then(|| format!("{found}, not {expect:?}"))
}

/// A server with two organizations on the pro plan (`acme` with an agent), and the
/// root admin's and SYSTEM's tokens.
struct Fixture {
    app: TestApp,
    root: String,
    sys: String,
    acme: proto::Organization,
    other: proto::Organization,
    agent: proto::Agent,
}

impl Fixture {
    async fn start(backend: Backend) -> Option<Fixture> {
        let app = TestApp::spawn(backend).await?;
        let root = app.root();
        let acme = create(&app, &root, named_on("Acme", "pro")).await;
        let other = create(&app, &root, named_on("Other", "pro")).await;
        let agent = register_agent(&app, &root, &acme.id, "Bot").await;
        let sys = system(&app);
        Some(Fixture {
            app,
            root,
            sys,
            acme,
            other,
            agent,
        })
    }

    /// `message` with the root admin's token.
    fn as_root<T>(&self, message: T) -> Request<T> {
        authed(message, &self.root)
    }

    /// `message` with SYSTEM's token.
    fn as_system<T>(&self, message: T) -> Request<T> {
        authed(message, &self.sys)
    }

    /// Row counts of every table a refused request could have written.
    async fn snapshot(&self) -> Vec<u64> {
        let app = &self.app;
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

    /// Runs `cases` in turn and checks each answer, then that the row counts are still
    /// `before` and that the server still serves; panics naming every failing case.
    async fn refuse_all(&self, before: &[u64], what: &str, cases: Vec<Case>) {
        let mut problems = Vec::new();
        for case in cases {
            if let Some(problem) = verdict(case.call.await, case.expect) {
                problems.push(format!("{}: {problem}", case.name));
            }
        }
        if self.snapshot().await != before {
            problems.push(format!("{what} wrote something"));
        }
        if let Err(status) = self.serves().await {
            problems.push(format!(
                "the server no longer serves after {what}: {status:?}"
            ));
        }
        assert!(problems.is_empty(), "{what}: {problems:#?}");
    }

    /// A plain read, which must still be answered.
    async fn serves(&self) -> Result<(), Status> {
        let request = proto::GetOrganizationRequest {
            organization_id: "internal".into(),
        };
        let get = rpc!(self.app.orgs(), get_organization, self.as_root(request));
        get.await.map(drop)
    }
}

// ---------------------------------------------------------------------------
// Request builders
// ---------------------------------------------------------------------------

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

/// CreateOrganization through `client` with raw metadata `(key, bytes)` only.
fn create_with(
    mut client: OrganizationServiceClient<Channel>,
    name: &str,
    metadata: &[(&'static str, &[u8])],
) -> BoxFuture<'static, Result<Response<proto::CreateOrganizationResponse>, Status>> {
    let mut request = Request::new(org_with(name, |_| {}));
    for (key, value) in metadata {
        let value = MetadataValue::try_from(*value).expect("sendable metadata bytes");
        request.metadata_mut().insert(*key, value);
    }
    Box::pin(async move { client.create_organization(request).await })
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

/// The request ids of the audit entries about `target_id`.
async fn audit_request_ids(app: &TestApp, target_id: &str) -> Vec<String> {
    let entries = audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(target_id))
        .all(app.store.db())
        .await
        .expect("read audit entries");
    entries.into_iter().map(|e| e.request_id).collect()
}

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

async fn huge_strings_are_refused_and_write_nothing(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let before = f.snapshot().await;
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
    let orgs = || f.app.orgs();
    let mut cases: Vec<Case> = creates
        .into_iter()
        .map(|(case, request, field)| {
            let call = rpc!(orgs(), create_organization, f.as_root(request));
            Case::new(case, Expect::Invalid(field), call)
        })
        .collect();
    let agent = proto::RegisterAgentRequest {
        organization_id: f.acme.id.clone(),
        agent: Some(proto::Agent {
            name: big.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let call = rpc!(orgs(), register_agent, f.as_root(agent));
    cases.push(Case::new("agent name", Expect::Invalid("agent.name"), call));
    let get = proto::GetOrganizationRequest {
        organization_id: big.clone(),
    };
    let call = rpc!(orgs(), get_organization, f.as_root(get));
    cases.push(Case::new(
        "organization id",
        Expect::Invalid("organization_id"),
        call,
    ));
    for (field, request) in [
        ("filter", list(&big, "", "")),
        ("order_by", list("", &big, "")),
        ("page_token", list("", "", &big)),
    ] {
        let call = rpc!(orgs(), list_organizations, f.as_root(request));
        cases.push(Case::new(field, Expect::Invalid(field), call));
    }
    let request = gift(&f.acme.id, "1.00", &big, "g");
    let call = rpc!(f.app.billing(), gift_credits, f.as_root(request));
    cases.push(Case::new("gift reason", Expect::Invalid("reason"), call));
    let slug = proto::CheckSlugAvailabilityRequest { slug: big.clone() };
    let call = rpc!(orgs(), check_slug_availability, f.as_root(slug));
    cases.push(Case::declinable(
        "check slug (a 1 MB slug is not available)",
        Expect::Invalid("slug"),
        call,
        |answer| !answer.available,
    ));
    f.refuse_all(&before, "huge strings", cases).await;
    f.app.stop().await;
}

async fn huge_repeated_fields_are_refused_and_write_nothing(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let (acme, other) = (&f.acme.id, &f.other.id);
    let before = f.snapshot().await;
    let mut wide = event("wide", &f.agent.id, M::Tokens, 1, "0.01");
    wide.dimensions = (0..100_000)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let events: Vec<proto::UsageEvent> = (0..10_000)
        .map(|i| event(&format!("e{i}"), &f.agent.id, M::Tokens, 1, "0.01"))
        .collect();
    let batch = proto::RecordUsageBatchRequest {
        organization_id: acme.clone(),
        events: events.clone(),
    };
    let stream = tokio_stream::iter(vec![proto::StreamUsageRequest {
        organization_id: acme.clone(),
        events,
    }]);
    let item = proto::AssetTransferItem {
        asset_type: AssetType::Credits as i32,
        mode: TransferMode::Move as i32,
        credit_amount: Some(usd("1.00")),
        ..Default::default()
    };
    let bulk = proto::TransferAssetsBulkRequest {
        source_organization_id: acme.clone(),
        target_organization_id: other.clone(),
        items: vec![item; 10_000],
        request_id: "bulk-1".into(),
        ..Default::default()
    };
    let ids = proto::TransferAssetsRequest {
        source_organization_id: acme.clone(),
        target_organization_id: other.clone(),
        asset_type: AssetType::Agents as i32,
        mode: TransferMode::Move as i32,
        ids: (0..100_000).map(|i| format!("agt_{i}")).collect(),
        request_id: "ids-1".into(),
        ..Default::default()
    };
    let alerts = org_with("Alerted", |o| {
        o.billing_alerts = Some(proto::BillingAlerts {
            alert_thresholds: (0..100_000).collect(),
            ..Default::default()
        })
    });
    let (billing, transfers) = (|| f.app.billing(), || f.app.transfers());
    let cases = vec![
        Case::new(
            "100k dimensions",
            Expect::Invalid("event.dimensions"),
            rpc!(billing(), record_usage, f.as_system(usage(acme, wide))),
        ),
        Case::new(
            "10k events in a batch",
            Expect::Invalid("events"),
            rpc!(billing(), record_usage_batch, f.as_system(batch)),
        ),
        Case::declinable(
            "10k events streamed (none accepted)",
            Expect::Invalid("events"),
            rpc!(billing(), stream_usage, f.as_system(stream)),
            |answer| answer.accepted_count == 0,
        ),
        Case::new(
            "10k bulk items",
            Expect::Invalid("items"),
            rpc!(transfers(), transfer_assets_bulk, f.as_root(bulk)),
        ),
        Case::new(
            "100k ids",
            Expect::Invalid("ids"),
            rpc!(transfers(), transfer_assets, f.as_root(ids)),
        ),
        Case::new(
            "100k thresholds",
            Expect::Invalid("organization.billing_alerts.alert_thresholds"),
            rpc!(f.app.orgs(), create_organization, f.as_root(alerts)),
        ),
    ];
    f.refuse_all(&before, "huge repeated fields", cases).await;
    f.app.stop().await;
}

async fn a_4_mb_message_is_refused_cleanly_and_writes_nothing(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let before = f.snapshot().await;
    let cases = [
        ("just under 4 MiB", (4 << 20) - 1024),
        ("over 4 MiB", (4 << 20) + 1),
    ]
    .into_iter()
    .map(|(case, size)| {
        let request = org_with("Big", |o| o.description = "d".repeat(size));
        let call = rpc!(f.app.orgs(), create_organization, f.as_root(request));
        Case::new(case, Expect::TooLarge("organization.description"), call)
    })
    .collect();
    f.refuse_all(&before, "a 4 MB message", cases).await;
    f.app.stop().await;
}

async fn hostile_metadata_is_refused_or_ignored_and_writes_nothing(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let before = f.snapshot().await;
    let bearer = |tail: &[u8]| [b"Bearer ".as_slice(), tail].concat();
    let (tab, bare) = (format!("Bearer\t{}", f.root), f.root.as_bytes());
    let truncated = bearer(&bare[..bare.len() - 5]);
    let (utf8, big) = (bearer(b"\xc3\x28\xa0\xa1"), bearer(&[b'a'; 12_000]));
    let (sql, empty) = (bearer(b"ak_'; DROP TABLE api_keys; --"), bearer(b""));
    let refused: [(&str, &'static str, &[u8]); 13] = [
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
    let mut cases: Vec<Case> = refused
        .into_iter()
        .map(|(case, key, value)| {
            let call = create_with(f.app.orgs(), "Metadata", &[(key, value)]);
            Case::new(case, Expect::Unauthenticated, call)
        })
        .collect();
    // Beyond the HTTP/2 header list limit the transport refuses the call (and may close
    // the connection, hence one of its own each).
    let huge = bearer(&[b'a'; 100_000]);
    for key in ["authorization", "x-api-key"] {
        let call = create_with(own_connection(&f.app), "Metadata", &[(key, &huge)]);
        cases.push(Case::new(
            format!("100 KB {key}"),
            Expect::ResourceExhausted,
            call,
        ));
    }
    f.refuse_all(&before, "refused credentials", cases).await;
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
        let created = create_with(f.app.orgs(), &format!("Traced {i}"), &metadata).await;
        let created = created.unwrap_or_else(|s| panic!("{case}: {s:?}"));
        let id = created.into_inner().organization.expect("organization").id;
        let audit = audit_request_ids(&f.app, &id).await;
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
    f.serves().await.expect("the server still serves");
    f.app.stop().await;
}

async fn nan_like_and_out_of_range_amounts_are_refused_and_write_nothing(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let before = f.snapshot().await;
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
    let mut cases = Vec::new();
    for (i, amount) in amounts.into_iter().enumerate() {
        let request = gift(&f.acme.id, amount, "hostile", &format!("gift-{i}"));
        cases.push(Case::new(
            format!("gift {amount:?}"),
            Expect::Invalid("amount.amount"),
            rpc!(f.app.billing(), gift_credits, f.as_root(request)),
        ));
        let cost = event(&format!("e{i}"), &f.agent.id, M::Tokens, 1, amount);
        let request = f.as_system(usage(&f.acme.id, cost));
        cases.push(Case::new(
            format!("cost {amount:?}"),
            Expect::Invalid("event.cost"),
            rpc!(f.app.billing(), record_usage, request),
        ));
        let rated = org_with("Rated", |o| o.billing_rate_per_agent = Some(usd(amount)));
        cases.push(Case::new(
            format!("rate {amount:?}"),
            Expect::Invalid("organization.billing_rate_per_agent.amount"),
            rpc!(f.app.orgs(), create_organization, f.as_root(rated)),
        ));
    }
    // "-0" is zero: refused where the amount must be positive.
    let request = gift(&f.acme.id, "-0", "x", "z");
    cases.push(Case::new(
        "gift -0",
        Expect::Invalid("amount.amount"),
        rpc!(f.app.billing(), gift_credits, f.as_root(request)),
    ));
    f.refuse_all(&before, "bad amounts", cases).await;
    f.app.stop().await;
}

async fn sql_metacharacters_are_plain_data(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let real = create(&f.app, &f.root, named("100% Real_Deal")).await;
    let before = f.snapshot().await;
    let forged_id = forged_token("", "", "acme", "' OR 1=1 --");
    let mut cases: Vec<Case> = [
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
    ]
    .into_iter()
    .map(|(case, filter, order_by, token, field)| {
        let request = f.as_root(list(filter, order_by, token));
        let call = rpc!(f.app.orgs(), list_organizations, request);
        Case::new(case, Expect::Invalid(field), call)
    })
    .collect();
    for slug in [
        "acme'--",
        "acme; DROP TABLE organizations",
        "ａｃｍｅ",
        "аcme",
    ] {
        let request = proto::CheckSlugAvailabilityRequest { slug: slug.into() };
        cases.push(Case::declinable(
            format!("check slug {slug:?} (no slug, not available)"),
            Expect::Invalid("slug"),
            rpc!(f.app.orgs(), check_slug_availability, f.as_root(request)),
            |answer| !answer.available,
        ));
        let get = proto::GetOrganizationRequest {
            organization_id: slug.into(),
        };
        cases.push(Case::new(
            format!("get {slug:?}"),
            Expect::Invalid("organization_id"),
            rpc!(f.app.orgs(), get_organization, f.as_root(get)),
        ));
    }
    f.refuse_all(&before, "SQL metacharacters", cases).await;

    // Quoted, the same characters are plain data: no match, no error, nothing dropped.
    let names = |filter: &str, order_by: &str, token: &str| {
        let list = rpc!(
            f.app.orgs(),
            list_organizations,
            f.as_root(list(filter, order_by, token))
        );
        async move {
            let response = list.await?.into_inner();
            let names = response.organizations.into_iter().map(|o| o.name);
            Ok::<_, Status>(names.collect::<Vec<_>>())
        }
    };
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
    assert_eq!(
        f.snapshot().await,
        before,
        "SQL metacharacters as plain data wrote something"
    );
    f.app.stop().await;
}

async fn bad_enums_and_request_ids_are_refused_and_write_nothing(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let before = f.snapshot().await;
    let mut cases = Vec::new();
    for value in [42, -1, i32::MAX, i32::MIN] {
        let request = org_with("Kind", |o| o.kind = value);
        cases.push(Case::new(
            format!("kind {value}"),
            Expect::Invalid("organization.kind"),
            rpc!(f.app.orgs(), create_organization, f.as_root(request)),
        ));
        let mut bad = event(&format!("m{value}"), &f.agent.id, M::Tokens, 1, "0.01");
        bad.metric = value;
        let request = f.as_system(usage(&f.acme.id, bad));
        cases.push(Case::new(
            format!("metric {value}"),
            Expect::Invalid("event.metric"),
            rpc!(f.app.billing(), record_usage, request),
        ));
        let invite = proto::InviteMemberRequest {
            organization_id: f.acme.id.clone(),
            email: "new@example.com".into(),
            role: value,
            ..Default::default()
        };
        cases.push(Case::new(
            format!("role {value}"),
            Expect::Invalid("role"),
            rpc!(f.app.orgs(), invite_member, f.as_root(invite)),
        ));
        let transfer = proto::TransferAssetsRequest {
            source_organization_id: f.acme.id.clone(),
            target_organization_id: f.other.id.clone(),
            asset_type: value,
            mode: value,
            request_id: format!("enum-{value}"),
            ..Default::default()
        };
        cases.push(Case::new(
            format!("asset type {value}"),
            Expect::Invalid("asset_type"),
            rpc!(f.app.transfers(), transfer_assets, f.as_root(transfer)),
        ));
    }
    let long = "r".repeat(129);
    for (case, id) in [
        ("129 chars", long.as_str()),
        ("control", "r\u{1}"),
        ("NUL", "r\u{0}"),
        ("newline", "r\nid"),
    ] {
        let request = gift(&f.acme.id, "1.00", "x", id);
        cases.push(Case::new(
            format!("gift request id {case}"),
            Expect::Invalid("request_id"),
            rpc!(f.app.billing(), gift_credits, f.as_root(request)),
        ));
        let request = proto::CreateOrganizationRequest {
            request_id: id.into(),
            ..org_with("Keyed", |_| {})
        };
        cases.push(Case::new(
            format!("create request id {case}"),
            Expect::Invalid("request_id"),
            rpc!(f.app.orgs(), create_organization, f.as_root(request)),
        ));
    }
    let request = gift(&f.acme.id, "1.00", "x", "");
    cases.push(Case::new(
        "empty gift request id",
        Expect::Invalid("request_id"),
        rpc!(f.app.billing(), gift_credits, f.as_root(request)),
    ));
    f.refuse_all(&before, "bad enums or request ids", cases)
        .await;
    f.app.stop().await;
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
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let before = f.snapshot().await;
    let acme = &f.acme.id;
    let nul = "a\u{0}b";
    let quoted = |field: &str| format!("{field} = \"{nul}\"");
    let token = forged_token("", "", nul, &uuid::Uuid::nil().to_string());
    let audit = proto::ListAuditEventsRequest {
        organization_id: acme.clone(),
        filter: quoted("actor_id"),
        ..Default::default()
    };
    let assets = proto::ListAssetsRequest {
        organization_id: acme.clone(),
        filter: quoted("external_id"),
        ..Default::default()
    };
    let transactions = proto::ListTransactionsRequest {
        organization_id: acme.clone(),
        filter: quoted("request_id"),
        ..Default::default()
    };
    let (orgs, billing) = (|| f.app.orgs(), || f.app.billing());
    let prefix = f.as_root(list(&quoted("prefix"), "", ""));
    let cases = vec![
        Case::new(
            "organizations prefix",
            Expect::Invalid("filter"),
            rpc!(orgs(), list_organizations, prefix),
        ),
        Case::new(
            "page token key",
            Expect::Invalid("page_token"),
            rpc!(orgs(), list_organizations, f.as_root(list("", "", &token))),
        ),
        Case::new(
            "audit actor_id",
            Expect::Invalid("filter"),
            rpc!(orgs(), list_audit_events, f.as_root(audit)),
        ),
        Case::new(
            "assets external_id",
            Expect::Invalid("filter"),
            rpc!(f.app.transfers(), list_assets, f.as_root(assets)),
        ),
        Case::new(
            "transactions request_id",
            Expect::Invalid("filter"),
            rpc!(billing(), list_transactions, f.as_root(transactions)),
        ),
        Case::new(
            "gift reason",
            Expect::Invalid("reason"),
            rpc!(
                billing(),
                gift_credits,
                f.as_root(gift(acme, "1.00", nul, "g"))
            ),
        ),
    ];
    f.refuse_all(&before, "NUL input", cases).await;
    f.app.stop().await;
}

/// Bad input must get a bounded error: echoing a megabyte back, or one violation per
/// element of a 100k list, makes trailers that HTTP/2 clients refuse.
async fn huge_input_is_not_echoed_into_errors(backend: Backend) {
    let Some(f) = Fixture::start(backend).await else {
        return;
    };
    let before = f.snapshot().await;
    let big = "9".repeat(1 << 20);
    let update = |paths: Vec<String>| proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: f.acme.id.clone(),
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
    let own = || own_connection(&f.app);
    let cases = vec![
        Case::new(
            "1 MB amount",
            Expect::Invalid("organization.billing_rate_per_agent.amount"),
            rpc!(own(), create_organization, f.as_root(rate)),
        ),
        Case::new(
            "100k bad alert emails",
            Expect::Invalid("organization.billing_alerts.alert_emails"),
            rpc!(own(), create_organization, f.as_root(emails)),
        ),
        Case::new(
            "1 MB mask path",
            Expect::Invalid("update_mask"),
            rpc!(
                own(),
                update_organization,
                f.as_root(update(vec![big.clone()]))
            ),
        ),
        Case::new(
            "100k mask paths",
            Expect::Invalid("update_mask"),
            rpc!(own(), update_organization, f.as_root(update(many))),
        ),
    ];
    f.refuse_all(&before, "huge input", cases).await;
    f.app.stop().await;
}
