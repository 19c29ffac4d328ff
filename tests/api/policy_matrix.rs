//! The policy matrix: every RPC of the descriptor set × every role × the caller's own
//! organization, a child of it, a foreign one and one that does not exist, checked
//! against the one policy table.
//!
//! Requests are built dynamically from the descriptors (so a new RPC is covered the day
//! it is added to a proto) and sent over a raw channel with a pass-through codec. The
//! expected code follows from the RPC's row in `tenantry::auth::policy::POLICY`:
//! no credentials → UNAUTHENTICATED (unless the row is public); a role the row does not
//! admit → PERMISSION_DENIED; an admitted role on an organization outside its scope (for
//! targeted rows) → PERMISSION_DENIED; anything else must get past authorization, i.e.
//! answer neither PERMISSION_DENIED nor UNAUTHENTICATED.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage,
    Value,
};
use tenantry::{
    auth::policy::{Access, CallerRole, POLICY, Rule},
    domain::ids::{self, IdKind},
    proto,
};
use tonic::{
    Code, Request, Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
    transport::Channel,
};

use crate::{
    helpers::{Backend, TestApp, authed, reason},
    on_both_backends,
};

on_both_backends!(
    every_rpc_has_exactly_one_policy_row,
    every_rpc_enforces_its_policy_row_for_every_role_and_target,
    an_inactive_home_org_blocks_its_callers_except_status_reads,
);

const PACKAGE: &str = "tenantry.v1";
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// A pass-through codec: the request is already encoded, the response is not decoded.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// What a call answered.
#[derive(Debug, Clone)]
struct Answer {
    code: Code,
    reason: String,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{:?}", self.code)
        } else {
            write!(f, "{:?} ({})", self.code, self.reason)
        }
    }
}

impl From<Result<(), Status>> for Answer {
    fn from(result: Result<(), Status>) -> Self {
        match result {
            Ok(()) => Answer {
                code: Code::Ok,
                reason: String::new(),
            },
            Err(status) => Answer {
                code: status.code(),
                reason: reason(&status),
            },
        }
    }
}

fn with_credential<T>(mut request: Request<T>, credential: Option<&str>) -> Request<T> {
    if let Some(credential) = credential {
        let value: MetadataValue<_> = format!("Bearer {credential}")
            .parse()
            .expect("header value");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Calls `method` with an encoded request and returns the answer. A server stream that
/// opens successfully counts as OK (it may stay open forever).
async fn call(
    channel: &Channel,
    method: &MethodDescriptor,
    body: Bytes,
    credential: Option<&str>,
) -> Result<Answer, String> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = http::uri::PathAndQuery::try_from(path).map_err(|e| format!("bad path: {e}"))?;
    let mut grpc = Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| format!("channel not ready: {e}"))?;
    let outcome = async {
        match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Answer::from(
                grpc.unary(
                    with_credential(Request::new(body), credential),
                    path,
                    RawCodec,
                )
                .await
                .map(drop),
            ),
            (true, false) => {
                let stream = tokio_stream::once(body);
                Answer::from(
                    grpc.client_streaming(
                        with_credential(Request::new(stream), credential),
                        path,
                        RawCodec,
                    )
                    .await
                    .map(drop),
                )
            }
            (client_streaming, true) => {
                let opened = if client_streaming {
                    grpc.streaming(
                        with_credential(Request::new(tokio_stream::once(body)), credential),
                        path,
                        RawCodec,
                    )
                    .await
                } else {
                    grpc.server_streaming(
                        with_credential(Request::new(body), credential),
                        path,
                        RawCodec,
                    )
                    .await
                };
                let opened = match opened {
                    Err(status) => Err(status),
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        match tokio::time::timeout(Duration::from_millis(300), stream.message())
                            .await
                        {
                            Ok(Err(status)) => Err(status),
                            _ => Ok(()),
                        }
                    }
                };
                Answer::from(opened)
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, outcome)
        .await
        .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))
}

// ---------------------------------------------------------------------------
// Descriptors and the policy table.
// ---------------------------------------------------------------------------

fn tenantry_methods() -> Vec<MethodDescriptor> {
    let pool =
        DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("decode the descriptor set");
    let methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.package_name() == PACKAGE)
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    assert!(
        !methods.is_empty(),
        "no {PACKAGE} services in the descriptor set"
    );
    methods
}

fn rule_of(method: &MethodDescriptor) -> Option<&'static Rule> {
    let service = method.parent_service();
    POLICY
        .iter()
        .find(|r| r.service == service.full_name() && r.method == method.name())
}

async fn every_rpc_has_exactly_one_policy_row(_backend: Backend) {
    let methods = tenantry_methods();
    let in_descriptors: BTreeSet<(String, String)> = methods
        .iter()
        .map(|m| {
            (
                m.parent_service().full_name().to_owned(),
                m.name().to_owned(),
            )
        })
        .collect();
    let mut problems = Vec::new();
    for (service, method) in &in_descriptors {
        let rows = POLICY
            .iter()
            .filter(|r| r.service == service && r.method == method)
            .count();
        if rows != 1 {
            problems.push(format!(
                "/{service}/{method}: {rows} policy rows (expected exactly 1)"
            ));
        }
    }
    for rule in POLICY {
        if !in_descriptors.contains(&(rule.service.to_owned(), rule.method.to_owned())) {
            problems.push(format!(
                "/{}/{}: policy row for an RPC that does not exist",
                rule.service, rule.method
            ));
        }
        if let Access::Roles(roles) = rule.access
            && roles.is_empty()
        {
            problems.push(format!("/{}/{}: admits no role", rule.service, rule.method));
        }
    }
    assert!(
        problems.is_empty(),
        "the policy table does not match the descriptors:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Roles, targets and the expected outcome.
// ---------------------------------------------------------------------------

/// Who calls. Non-root callers belong to agency A; operators to the root org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No credentials at all.
    Nobody,
    /// An authenticated principal with this role.
    Role(CallerRole),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Nobody => f.write_str("none"),
            Who::Role(CallerRole::User) => f.write_str("USER(no role)"),
            Who::Role(role) => f.write_str(role.as_str()),
        }
    }
}

/// The order roles are run in within one world: API keys first (a later regeneration
/// or deletion must not spoil them), operators last (their deletions and deactivations
/// are the most destructive).
const CALLERS: [Who; 9] = [
    Who::Nobody,
    Who::Role(CallerRole::User),
    Who::Role(CallerRole::ApiKey),
    Who::Role(CallerRole::Member),
    Who::Role(CallerRole::ConfigAdmin),
    Who::Role(CallerRole::AgencyAdmin),
    Who::Role(CallerRole::RootPowerUser),
    Who::Role(CallerRole::RootAdmin),
    Who::Role(CallerRole::System),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own,
    Child,
    Foreign,
    /// A well-formed id of an organization that does not exist: outside every
    /// non-operator's scope, so PERMISSION_DENIED (ids cannot be probed), while
    /// operators may learn it is NOT_FOUND.
    Absent,
}

/// Foreign first and own last: a destructive call on the caller's own org must not
/// change what its other targets answer.
const TARGETS: [Target; 4] = [Target::Absent, Target::Foreign, Target::Child, Target::Own];

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Own => "own",
            Target::Child => "child",
            Target::Foreign => "foreign",
            Target::Absent => "absent",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Unauthenticated,
    PermissionDenied,
    /// Past authentication and authorization: any code but those two.
    Admitted,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Unauthenticated => "UNAUTHENTICATED",
            Expect::PermissionDenied => "PERMISSION_DENIED",
            Expect::Admitted => "admitted (not UNAUTHENTICATED/PERMISSION_DENIED)",
        })
    }
}

impl Expect {
    fn matches(self, code: Code) -> bool {
        match self {
            Expect::Unauthenticated => code == Code::Unauthenticated,
            Expect::PermissionDenied => code == Code::PermissionDenied,
            Expect::Admitted => !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
        }
    }
}

/// Whether `role` may act on `target` (SPEC §3): operators on any org, an agency admin
/// on its agency and the agency's tenants, the other org-bound roles on their own org,
/// a user without a role on none.
fn in_scope(role: CallerRole, target: Target) -> bool {
    match role {
        CallerRole::System | CallerRole::RootAdmin | CallerRole::RootPowerUser => true,
        _ if target == Target::Absent => false,
        CallerRole::AgencyAdmin => matches!(target, Target::Own | Target::Child),
        CallerRole::ConfigAdmin | CallerRole::Member | CallerRole::ApiKey => target == Target::Own,
        CallerRole::User => false,
    }
}

fn expected(rule: &Rule, who: Who, target: Target) -> Expect {
    match who {
        Who::Nobody if rule.access == Access::Public => Expect::Admitted,
        Who::Nobody => Expect::Unauthenticated,
        Who::Role(role) if !rule.admits(role) => Expect::PermissionDenied,
        Who::Role(role) if rule.targeted && !in_scope(role, target) => Expect::PermissionDenied,
        Who::Role(_) => Expect::Admitted,
    }
}

// ---------------------------------------------------------------------------
// The world: root `internal`; agency A with tenant T1; agency B with tenant T2.
// ---------------------------------------------------------------------------

struct World {
    root_id: String,
    a: String,
    t1: String,
    t2: String,
    absent: String,
    api_key: String,
    /// One agent per org id, when the RPC needs agents.
    agents: Vec<(String, String)>,
}

impl World {
    /// Builds a fresh world through the RPCs, as the root admin.
    async fn build(app: &TestApp, root_id: &str, n: usize, with_agents: bool) -> World {
        let root = app.root();
        let a = create_org(
            app,
            &root,
            &format!("Matrix Agency A {n}"),
            proto::OrganizationKind::Agency,
            "",
        )
        .await;
        let t1 = create_org(
            app,
            &root,
            &format!("Matrix Tenant T1 {n}"),
            proto::OrganizationKind::Tenant,
            &a,
        )
        .await;
        let b = create_org(
            app,
            &root,
            &format!("Matrix Agency B {n}"),
            proto::OrganizationKind::Agency,
            "",
        )
        .await;
        let t2 = create_org(
            app,
            &root,
            &format!("Matrix Tenant T2 {n}"),
            proto::OrganizationKind::Tenant,
            &b,
        )
        .await;
        let api_key = app
            .orgs()
            .regenerate_api_key(authed(
                proto::RegenerateApiKeyRequest {
                    organization_id: a.clone(),
                },
                &root,
            ))
            .await
            .expect("regenerate A's API key")
            .into_inner()
            .api_key;
        let mut agents = Vec::new();
        if with_agents {
            for org in [root_id, &a, &t1, &t2] {
                let agent = app
                    .orgs()
                    .register_agent(authed(
                        proto::RegisterAgentRequest {
                            organization_id: org.to_owned(),
                            agent: Some(proto::Agent {
                                name: format!("matrix agent {n}"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        &root,
                    ))
                    .await
                    .expect("register agent")
                    .into_inner()
                    .agent
                    .expect("agent");
                agents.push((org.to_owned(), agent.id));
            }
        }
        World {
            root_id: root_id.to_owned(),
            a,
            t1,
            t2,
            absent: ids::encode(IdKind::Organization, uuid::Uuid::now_v7()),
            api_key,
            agents,
        }
    }

    fn home(&self, who: Who) -> &str {
        match who {
            Who::Role(role) if role.is_operator() => &self.root_id,
            _ => &self.a,
        }
    }

    /// own / child / foreign as seen by `who`.
    fn target(&self, who: Who, target: Target) -> &str {
        let operator = matches!(who, Who::Role(role) if role.is_operator());
        match (operator, target) {
            (true, Target::Own) => &self.root_id,
            (true, Target::Child) => &self.a,
            (false, Target::Own) => &self.a,
            (false, Target::Child) => &self.t1,
            (_, Target::Foreign) => &self.t2,
            (_, Target::Absent) => &self.absent,
        }
    }

    fn agent_in(&self, org: &str) -> &str {
        self.agents
            .iter()
            .find(|(o, _)| o == org)
            .map(|(_, agent)| agent.as_str())
            .unwrap_or_default()
    }

    fn credential(&self, app: &TestApp, who: Who) -> Option<String> {
        match who {
            Who::Nobody => None,
            Who::Role(CallerRole::ApiKey) => Some(self.api_key.clone()),
            Who::Role(role) => {
                let name = if role == CallerRole::User {
                    ""
                } else {
                    role.as_str()
                };
                let sub = format!("matrix-{}", role.as_str().to_lowercase());
                let email = format!("{sub}@example.com");
                Some(app.token_for(name, self.home(who), &sub, Some(&email)))
            }
        }
    }

    /// Undoes what an earlier role did to agency A's status, so the next org-bound role
    /// is checked with an active home (an inactive one answers ORG_INACTIVE instead).
    async fn heal(&self, app: &TestApp) {
        let root = app.root();
        let Ok(found) = app
            .orgs()
            .get_organization(authed(
                proto::GetOrganizationRequest {
                    organization_id: self.a.clone(),
                },
                &root,
            ))
            .await
        else {
            return;
        };
        let status = found
            .into_inner()
            .organization
            .map(|o| o.status())
            .unwrap_or_default();
        match status {
            proto::OrganizationStatus::Inactive => {
                let _ = app
                    .orgs()
                    .set_organization_active(authed(
                        proto::SetOrganizationActiveRequest {
                            organization_id: self.a.clone(),
                            active: true,
                            ..Default::default()
                        },
                        &root,
                    ))
                    .await;
            }
            proto::OrganizationStatus::Cancelled => {
                let _ = app
                    .orgs()
                    .reactivate_account(authed(
                        proto::ReactivateAccountRequest {
                            organization_id: self.a.clone(),
                            reason: "policy matrix".into(),
                        },
                        &root,
                    ))
                    .await;
            }
            _ => {}
        }
    }
}

async fn create_org(
    app: &TestApp,
    root: &str,
    name: &str,
    kind: proto::OrganizationKind,
    parent_id: &str,
) -> String {
    app.orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: name.into(),
                    kind: kind.into(),
                    parent_id: parent_id.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            root,
        ))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
        .into_inner()
        .organization
        .expect("organization")
        .id
}

async fn root_org_id(app: &TestApp) -> String {
    app.orgs()
        .get_organization(authed(
            proto::GetOrganizationRequest {
                organization_id: "internal".into(),
            },
            &app.root(),
        ))
        .await
        .expect("get the root organization")
        .into_inner()
        .organization
        .expect("organization")
        .id
}

// ---------------------------------------------------------------------------
// Dynamic requests.
// ---------------------------------------------------------------------------

fn set_string(message: &mut DynamicMessage, name: &str, value: &str) {
    if let Some(field) = message.descriptor().get_field_by_name(name)
        && field.kind() == Kind::String
        && !field.is_list()
    {
        message.set_field(&field, Value::String(value.to_owned()));
    }
}

fn set_nested_string(message: &mut DynamicMessage, name: &str, inner: &str, value: &str) {
    let Some(field) = message.descriptor().get_field_by_name(name) else {
        return;
    };
    let Kind::Message(descriptor) = field.kind() else {
        return;
    };
    if field.is_list() || field.is_map() {
        return;
    }
    let mut nested = DynamicMessage::new(descriptor);
    set_string(&mut nested, inner, value);
    message.set_field(&field, Value::Message(nested));
}

fn needs_agents(input: &MessageDescriptor, method: &str) -> bool {
    input.get_field_by_name("agent_id").is_some() || method == "UpdateAgent"
}

/// The request of `method` aimed at organization `org` (and its agent).
fn request_for(method: &MethodDescriptor, org: &str, agent: &str) -> Bytes {
    let mut message = DynamicMessage::new(method.input());
    for field in [
        "organization_id",
        "source_organization_id",
        "target_organization_id",
    ] {
        set_string(&mut message, field, org);
    }
    if method.name() == "CreateOrganization" {
        set_nested_string(&mut message, "organization", "parent_id", org);
    } else {
        set_nested_string(&mut message, "organization", "id", org);
    }
    set_string(&mut message, "agent_id", agent);
    if method.name() == "UpdateAgent" {
        set_nested_string(&mut message, "agent", "id", agent);
    }
    Bytes::from(message.encode_to_vec())
}

// ---------------------------------------------------------------------------
// The matrix.
// ---------------------------------------------------------------------------

struct Mismatch {
    rpc: String,
    who: Who,
    target: Target,
    expected: Expect,
    got: String,
}

fn table(mismatches: &[Mismatch]) -> String {
    let mut out = format!(
        "{:<58} {:<16} {:<8} {:<20} got\n",
        "rpc", "role", "target", "expected"
    );
    for m in mismatches {
        let expected = match m.expected {
            Expect::Admitted => "admitted".to_owned(),
            other => other.to_string(),
        };
        out.push_str(&format!(
            "{:<58} {:<16} {:<8} {:<20} {}\n",
            m.rpc,
            m.who.to_string(),
            m.target.to_string(),
            expected,
            m.got
        ));
    }
    out
}

async fn every_rpc_enforces_its_policy_row_for_every_role_and_target(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.public_rate_per_minute = 100_000).await
    else {
        return;
    };
    let started = std::time::Instant::now();
    let root_id = root_org_id(&app).await;
    let methods = tenantry_methods();
    let mut mismatches = Vec::new();
    let mut missing_rows = Vec::new();
    let mut calls = 0usize;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (n, method) in methods.iter().enumerate() {
        let rpc = format!("{}/{}", method.parent_service().name(), method.name());
        let Some(rule) = rule_of(method) else {
            missing_rows.push(rpc);
            continue;
        };
        let world = World::build(
            &app,
            &root_id,
            n,
            needs_agents(&method.input(), method.name()),
        )
        .await;
        for who in CALLERS {
            if matches!(who, Who::Role(role) if role.is_org_bound() || role == CallerRole::User) {
                world.heal(&app).await;
            }
            let credential = world.credential(&app, who);
            for target in TARGETS {
                let org = world.target(who, target);
                let body = request_for(method, org, world.agent_in(org));
                let expect = expected(rule, who, target);
                calls += 1;
                let got = call(&app.channel, method, body, credential.as_deref()).await;
                let matched = matches!(&got, Ok(answer) if expect.matches(answer.code));
                if let Ok(answer) = &got {
                    *tally
                        .entry(format!("{expect:?} → {:?}", answer.code))
                        .or_default() += 1;
                }
                if !matched {
                    mismatches.push(Mismatch {
                        rpc: rpc.clone(),
                        who,
                        target,
                        expected: expect,
                        got: match got {
                            Ok(answer) => answer.to_string(),
                            Err(problem) => problem,
                        },
                    });
                }
            }
        }
    }
    eprintln!(
        "policy matrix on {backend:?}: {} RPCs, {calls} calls in {:.1?}; outcomes: {tally:?}",
        methods.len(),
        started.elapsed()
    );
    assert!(
        missing_rows.is_empty(),
        "RPCs without a policy row: {missing_rows:?}"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {calls} policy checks failed:\n{}",
        mismatches.len(),
        table(&mismatches)
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// while_inactive: a deactivated org's members and keys may only read its status.
// ---------------------------------------------------------------------------

async fn an_inactive_home_org_blocks_its_callers_except_status_reads(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.public_rate_per_minute = 100_000).await
    else {
        return;
    };
    let root_id = root_org_id(&app).await;
    let world = World::build(&app, &root_id, 0, false).await;
    app.orgs()
        .deactivate_organization(authed(
            proto::DeactivateOrganizationRequest {
                organization_id: world.a.clone(),
                reason: "policy matrix".into(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("deactivate A");
    let org_bound = [
        CallerRole::ApiKey,
        CallerRole::Member,
        CallerRole::ConfigAdmin,
        CallerRole::AgencyAdmin,
    ];
    let mut mismatches = Vec::new();
    let mut calls = 0usize;
    for method in tenantry_methods() {
        let Some(rule) = rule_of(&method) else {
            continue;
        };
        let rpc = format!("{}/{}", method.parent_service().name(), method.name());
        for role in org_bound {
            let who = Who::Role(role);
            let credential = world.credential(&app, who);
            let body = request_for(&method, &world.a, "");
            calls += 1;
            let got = call(&app.channel, &method, body, credential.as_deref()).await;
            let (ok, expected) = match (&got, rule.admits(role), rule.while_inactive) {
                (Ok(answer), false, _) => {
                    (answer.code == Code::PermissionDenied, "PERMISSION_DENIED")
                }
                (Ok(answer), true, false) => (
                    answer.code == Code::FailedPrecondition && answer.reason == "ORG_INACTIVE",
                    "FAILED_PRECONDITION (ORG_INACTIVE)",
                ),
                (Ok(answer), true, true) => (
                    !matches!(answer.code, Code::Unauthenticated | Code::PermissionDenied)
                        && answer.reason != "ORG_INACTIVE",
                    "admitted while inactive",
                ),
                (Err(_), _, _) => (false, "an answer"),
            };
            if !ok {
                let got = match got {
                    Ok(answer) => answer.to_string(),
                    Err(problem) => problem,
                };
                mismatches.push(format!(
                    "{rpc:<58} {:<16} expected {expected:<36} got {got}",
                    who.to_string()
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {calls} checks with an inactive home org failed:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    app.stop().await;
}
