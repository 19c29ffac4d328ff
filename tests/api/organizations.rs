//! OrganizationService: slugs, reads, lists, updates, deletes and their audit trail.
//! The helpers at the top are shared by the agent, bad-input and idempotency suites.

use std::collections::HashSet;

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use tenantry::{
    domain::ids::{self, IdKind},
    proto::{self, organization_service_client::OrganizationServiceClient},
    storage::entities::{agents, api_keys, audit_entries, organizations},
};
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    helpers::{Backend, TestApp, authed, metadata, reason, violations},
    on_both_backends,
};

/// An organization message with only a name.
pub(crate) fn named(name: &str) -> proto::Organization {
    proto::Organization {
        name: name.into(),
        ..Default::default()
    }
}

/// USD money.
pub(crate) fn usd(amount: &str) -> proto::Money {
    proto::Money {
        currency_code: "USD".into(),
        amount: amount.into(),
    }
}

/// A field mask.
pub(crate) fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// CreateOrganization as `token`.
pub(crate) async fn try_create(
    app: &TestApp,
    token: &str,
    organization: proto::Organization,
) -> Result<proto::Organization, Status> {
    let request = proto::CreateOrganizationRequest {
        organization: Some(organization),
        ..Default::default()
    };
    app.orgs()
        .create_organization(authed(request, token))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

/// CreateOrganization as `token`, expected to succeed.
pub(crate) async fn create(
    app: &TestApp,
    token: &str,
    organization: proto::Organization,
) -> proto::Organization {
    try_create(app, token, organization)
        .await
        .expect("create organization")
}

/// An agency under the root, created by the root admin.
pub(crate) async fn agency(app: &TestApp, name: &str) -> proto::Organization {
    let organization = proto::Organization {
        kind: proto::OrganizationKind::Agency as i32,
        ..named(name)
    };
    create(app, &app.root(), organization).await
}

/// An organization message with a name, on `plan` (set by the creating operator or
/// agency): for tests that need more room than the free plan's limits (one agent, one
/// member, one tenant per agency).
pub(crate) fn named_on(name: &str, plan: &str) -> proto::Organization {
    proto::Organization {
        plan: plan.into(),
        ..named(name)
    }
}

/// An agency under the root on `plan`, created by the root admin.
pub(crate) async fn agency_on(app: &TestApp, name: &str, plan: &str) -> proto::Organization {
    let organization = proto::Organization {
        kind: proto::OrganizationKind::Agency as i32,
        ..named_on(name, plan)
    };
    create(app, &app.root(), organization).await
}

/// A tenant under `parent_id` (self-managed when empty), created by the root admin.
pub(crate) async fn tenant(app: &TestApp, name: &str, parent_id: &str) -> proto::Organization {
    let organization = proto::Organization {
        kind: proto::OrganizationKind::Tenant as i32,
        parent_id: parent_id.into(),
        ..named(name)
    };
    create(app, &app.root(), organization).await
}

/// GetOrganization as `token`.
pub(crate) async fn get(
    app: &TestApp,
    token: &str,
    reference: &str,
) -> Result<proto::Organization, Status> {
    let request = proto::GetOrganizationRequest {
        organization_id: reference.into(),
    };
    app.orgs()
        .get_organization(authed(request, token))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

/// RegisterAgent in `org_id` as `token`, expected to succeed.
pub(crate) async fn register_agent(
    app: &TestApp,
    token: &str,
    org_id: &str,
    name: &str,
) -> proto::Agent {
    let request = proto::RegisterAgentRequest {
        organization_id: org_id.into(),
        agent: Some(proto::Agent {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    app.orgs()
        .register_agent(authed(request, token))
        .await
        .expect("register agent")
        .into_inner()
        .agent
        .expect("agent")
}

/// UnassignAgent as the root admin, expected to succeed.
pub(crate) async fn unassign(app: &TestApp, agent_id: &str) -> proto::Agent {
    let request = proto::UnassignAgentRequest {
        agent_id: agent_id.into(),
        ..Default::default()
    };
    app.orgs()
        .unassign_agent(authed(request, &app.root()))
        .await
        .expect("unassign agent")
        .into_inner()
        .agent
        .expect("agent")
}

/// A client on its own connection, so concurrent calls really run side by side.
pub(crate) fn own_connection(app: &TestApp) -> OrganizationServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", app.grpc_port))
        .expect("endpoint")
        .connect_lazy();
    OrganizationServiceClient::new(channel)
}

/// The database id of an `org_…` id.
pub(crate) fn org_uuid(id: &str) -> Uuid {
    ids::decode(IdKind::Organization, id).expect("organization id")
}

/// The database id of an `agt_…` id.
pub(crate) fn agent_uuid(id: &str) -> Uuid {
    ids::decode(IdKind::Agent, id).expect("agent id")
}

/// The stored organization row.
pub(crate) async fn org_row(app: &TestApp, id: &str) -> organizations::Model {
    organizations::Entity::find_by_id(org_uuid(id))
        .one(app.store.db())
        .await
        .expect("read organization")
        .expect("organization row")
}

/// The stored agent row.
pub(crate) async fn agent_row(app: &TestApp, id: &str) -> agents::Model {
    agents::Entity::find_by_id(agent_uuid(id))
        .one(app.store.db())
        .await
        .expect("read agent")
        .expect("agent row")
}

/// Number of rows of an entity.
pub(crate) async fn rows<E>(app: &TestApp) -> u64
where
    E: EntityTrait,
    E::Model: Sync,
{
    E::find().count(app.store.db()).await.expect("count rows")
}

/// Audit actions recorded for a target, oldest first.
pub(crate) async fn audit_actions(app: &TestApp, target_id: &str) -> Vec<String> {
    audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(target_id))
        .order_by_asc(audit_entries::Column::CreateTime)
        .order_by_asc(audit_entries::Column::Id)
        .all(app.store.db())
        .await
        .expect("read audit entries")
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// ListOrganizations as `token`.
async fn list(
    app: &TestApp,
    token: &str,
    request: proto::ListOrganizationsRequest,
) -> Result<proto::ListOrganizationsResponse, Status> {
    app.orgs()
        .list_organizations(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// Slugs of every organization matching `filter`, in the order listed.
async fn slugs(app: &TestApp, token: &str, filter: &str, order_by: &str) -> Vec<String> {
    let request = proto::ListOrganizationsRequest {
        filter: filter.into(),
        order_by: order_by.into(),
        ..Default::default()
    };
    let response = list(app, token, request).await.expect("list organizations");
    assert!(response.next_page_token.is_empty());
    response.organizations.into_iter().map(|o| o.slug).collect()
}

async fn update(
    app: &TestApp,
    token: &str,
    organization: proto::Organization,
    paths: &[&str],
) -> Result<proto::Organization, Status> {
    let request = proto::UpdateOrganizationRequest {
        organization: Some(organization),
        update_mask: mask(paths),
    };
    app.orgs()
        .update_organization(authed(request, token))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

async fn delete(app: &TestApp, token: &str, id: &str) -> Result<proto::Organization, Status> {
    let request = proto::DeleteOrganizationRequest {
        organization_id: id.into(),
        ..Default::default()
    };
    app.orgs()
        .delete_organization(authed(request, token))
        .await
        .map(|r| r.into_inner().organization.expect("organization"))
}

on_both_backends!(
    slugs_follow_the_seed_rules,
    updating_the_slug_fails,
    slugs_are_never_reused_after_delete,
    availability_checks_answer_before_create,
    long_names_get_distinct_slugs,
    concurrent_creates_of_one_name_get_distinct_slugs,
    get_accepts_an_id_or_a_slug,
    list_filters_by_status_kind_parent_and_prefix,
    list_orders_by_name_and_create_time,
    list_pages_through_everything_once,
    list_reports_each_orgs_agent_count,
    get_and_list_count_agents_as_they_move,
    list_shows_only_what_the_caller_may_see,
    update_applies_the_mask_and_checks_the_etag,
    concurrent_updates_without_an_etag_all_apply,
    billing_terms_are_set_by_managers_only,
    deleting_an_org_with_agents_fails_until_they_are_unassigned,
    every_mutation_is_audited,
);

async fn slugs_follow_the_seed_rules(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let first = create(&app, &root, named("AgenticMail")).await;
    assert_eq!(first.slug, "agenticmail");
    let acme = create(&app, &root, named("Acme Corp")).await;
    assert_eq!(acme.slug, "acme-corp");
    let second = create(&app, &root, named("AgenticMail")).await;
    assert_eq!(second.slug, "agenticmail-2");
    assert_ne!(first.id, second.id);
    let taken = try_create(
        &app,
        &root,
        proto::Organization {
            slug: "acme-corp".into(),
            ..named("Other")
        },
    )
    .await
    .expect_err("explicit slug taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(reason(&taken), "SLUG_TAKEN");
    assert_eq!(metadata(&taken, "slug").as_deref(), Some("acme-corp"));
    let explicit = create(
        &app,
        &root,
        proto::Organization {
            slug: "mail-co".into(),
            ..named("AgenticMail")
        },
    )
    .await;
    assert_eq!(explicit.slug, "mail-co");
    // Defaults of a new tenant.
    assert_eq!(first.kind, proto::OrganizationKind::Tenant as i32);
    assert_eq!(first.status, proto::OrganizationStatus::Active as i32);
    assert_eq!(first.currency, "USD");
    assert_eq!(first.billing_rate_per_agent, Some(usd("0.00")));
    assert!(first.parent_id.is_empty());
    let stored: Vec<String> = organizations::Entity::find()
        .order_by_asc(organizations::Column::Slug)
        .all(app.store.db())
        .await
        .expect("read")
        .into_iter()
        .map(|o| o.slug)
        .collect();
    assert_eq!(
        stored,
        [
            "acme-corp",
            "agenticmail",
            "agenticmail-2",
            "internal",
            "mail-co"
        ]
    );
    app.stop().await;
}

async fn updating_the_slug_fails(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let change = proto::Organization {
        id: acme.id.clone(),
        slug: "acme-inc".into(),
        ..Default::default()
    };
    let refused = update(&app, &root, change.clone(), &["slug"])
        .await
        .expect_err("slug is immutable");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), ["update_mask"]);
    // Also when sent together with a legitimate field.
    let refused = update(
        &app,
        &root,
        proto::Organization {
            name: "Acme Inc".into(),
            ..change
        },
        &["name", "slug"],
    )
    .await
    .expect_err("slug is immutable");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let row = org_row(&app, &acme.id).await;
    assert_eq!(
        (row.slug.as_str(), row.name.as_str(), row.version),
        ("acme-corp", "Acme Corp", 1)
    );
    app.stop().await;
}

async fn slugs_are_never_reused_after_delete(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    delete(&app, &root, &acme.id).await.expect("delete");
    let taken = try_create(
        &app,
        &root,
        proto::Organization {
            slug: "acme-corp".into(),
            ..named("Acme Corp")
        },
    )
    .await
    .expect_err("a deleted org's slug stays taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(reason(&taken), "SLUG_TAKEN");
    let again = create(&app, &root, named("Acme Corp")).await;
    assert_eq!(again.slug, "acme-corp-2");
    let check = app
        .orgs()
        .check_slug_availability(authed(
            proto::CheckSlugAvailabilityRequest {
                slug: "acme-corp".into(),
            },
            &root,
        ))
        .await
        .expect("check slug")
        .into_inner();
    assert!(!check.available);
    assert_eq!(check.reason, "SLUG_TAKEN");
    assert_eq!(check.suggestion, "acme-corp-3");
    let name = app
        .orgs()
        .check_organization_name(authed(
            proto::CheckOrganizationNameRequest {
                name: "Acme Corp".into(),
            },
            &root,
        ))
        .await
        .expect("check name")
        .into_inner();
    assert!(!name.available);
    assert_eq!(name.suggested_slug, "acme-corp-3");
    // The slug of the deleted org does not resolve to anything.
    let gone = get(&app, &root, "acme-corp").await.expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}

async fn availability_checks_answer_before_create(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    create(&app, &root, named("AgenticMail")).await;
    let member = app.token("MEMBER", "internal");
    let slug = |slug: &str| {
        let request = authed(
            proto::CheckSlugAvailabilityRequest { slug: slug.into() },
            &member,
        );
        let mut client = app.orgs();
        async move {
            client
                .check_slug_availability(request)
                .await
                .expect("check slug")
                .into_inner()
        }
    };
    let free = slug("fresh-start").await;
    assert!(free.available);
    assert_eq!(
        (free.reason.as_str(), free.suggestion.as_str()),
        ("", "fresh-start")
    );
    let taken = slug("agenticmail").await;
    assert!(!taken.available);
    assert_eq!(
        (taken.reason.as_str(), taken.suggestion.as_str()),
        ("SLUG_TAKEN", "agenticmail-2")
    );
    for bad in ["Acme", "a--b", "-acme"] {
        let invalid = slug(bad).await;
        assert!(!invalid.available, "{bad}");
        assert_eq!(invalid.reason, "INVALID_SLUG", "{bad}");
    }
    let name = |name: &str| {
        let request = authed(
            proto::CheckOrganizationNameRequest { name: name.into() },
            &member,
        );
        let mut client = app.orgs();
        async move { client.check_organization_name(request).await }
    };
    let fresh = name("Brand New Co").await.expect("check name").into_inner();
    assert!(fresh.available);
    assert_eq!(fresh.suggested_slug, "brand-new-co");
    let existing = name("AgenticMail").await.expect("check name").into_inner();
    assert!(!existing.available);
    assert_eq!(
        (existing.reason.as_str(), existing.suggested_slug.as_str()),
        ("SLUG_TAKEN", "agenticmail-2")
    );
    let empty = name("  ").await.expect_err("empty name");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(violations(&empty), ["name"]);
    // The checks reserve nothing.
    assert_eq!(rows::<organizations::Entity>(&app).await, 2);
    app.stop().await;
}

async fn long_names_get_distinct_slugs(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let name = "Extraordinarily Long Organization Name For Testing Slug Truncation Rules";
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let org = create(&app, &root, named(name)).await;
        assert!(org.slug.len() <= 63, "{}", org.slug);
        assert!(
            seen.insert(org.slug.clone()),
            "slug {} given twice",
            org.slug
        );
    }
    let slugs: Vec<&str> = seen.iter().map(String::as_str).collect();
    for suffix in ["-2", "-3", "-4"] {
        assert!(
            slugs.iter().any(|s| s.ends_with(suffix)),
            "{suffix} missing in {slugs:?}"
        );
    }
    app.stop().await;
}

async fn concurrent_creates_of_one_name_get_distinct_slugs(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let request = proto::CreateOrganizationRequest {
            organization: Some(named("Acme Corp")),
            ..Default::default()
        };
        let request = authed(request, &root);
        let mut client = own_connection(&app);
        tasks.push(tokio::spawn(async move {
            client.create_organization(request).await
        }));
    }
    let mut slugs = HashSet::new();
    for task in tasks {
        let created = task.await.expect("task").expect("every create succeeds");
        slugs.insert(
            created
                .into_inner()
                .organization
                .expect("organization")
                .slug,
        );
    }
    let expected: HashSet<String> = std::iter::once("acme-corp".to_owned())
        .chain((2..=12).map(|n| format!("acme-corp-{n}")))
        .collect();
    assert_eq!(slugs, expected);
    assert_eq!(rows::<organizations::Entity>(&app).await, 13);
    app.stop().await;
}

async fn get_accepts_an_id_or_a_slug(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let by_id = get(&app, &root, &acme.id).await.expect("get by id");
    let by_slug = get(&app, &root, "acme-corp").await.expect("get by slug");
    assert_eq!(by_id, by_slug);
    assert_eq!(by_id.name, "Acme Corp");
    assert_eq!(by_id.etag, acme.etag);
    let unknown = get(&app, &root, "no-such-org")
        .await
        .expect_err("unknown slug");
    assert_eq!(unknown.code(), Code::NotFound);
    let unknown = get(
        &app,
        &root,
        &ids::encode(IdKind::Organization, Uuid::now_v7()),
    )
    .await
    .expect_err("unknown id");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = get(&app, &root, "Not A Slug").await.expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(violations(&malformed), ["organization_id"]);
    // Another tenant's admin cannot tell existing from missing organizations.
    let other = create(&app, &root, named("Other")).await;
    let admin = app.token("CONFIG_ADMIN", &other.id);
    for reference in [acme.id.as_str(), "acme-corp", "no-such-org", "Not A Slug"] {
        let denied = get(&app, &admin, reference).await.expect_err("foreign");
        assert_eq!(denied.code(), Code::PermissionDenied, "{reference}");
    }
    assert_eq!(
        get(&app, &admin, &other.slug).await.expect("own").id,
        other.id
    );
    app.stop().await;
}

/// Agency "Beta Agency" with tenants "Acme Corp" and "Alpha Tenant" (deactivated),
/// agency "Omega Agency" with tenant "Omega Client", self-managed "Zeta Solo".
async fn populate(app: &TestApp) -> (proto::Organization, proto::Organization) {
    // Beta has two tenants: more than the free plan's one.
    let beta = agency_on(app, "Beta Agency", "pro").await;
    tenant(app, "Acme Corp", &beta.id).await;
    let alpha = tenant(app, "Alpha Tenant", &beta.id).await;
    let omega = agency(app, "Omega Agency").await;
    tenant(app, "Omega Client", &omega.id).await;
    tenant(app, "Zeta Solo", "").await;
    let request = proto::DeactivateOrganizationRequest {
        organization_id: alpha.id.clone(),
        reason: "Non-payment".into(),
        notify_owner: false,
    };
    app.orgs()
        .deactivate_organization(authed(request, &app.root()))
        .await
        .expect("deactivate");
    (beta, omega)
}

async fn list_filters_by_status_kind_parent_and_prefix(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let (beta, omega) = populate(&app).await;
    let cases = [
        ("status = INACTIVE", vec!["alpha-tenant"]),
        ("kind = AGENCY", vec!["beta-agency", "omega-agency"]),
        ("kind = ROOT", vec!["internal"]),
        (
            &*format!("parent_id = {}", beta.id),
            vec!["acme-corp", "alpha-tenant"],
        ),
        (
            &*format!("parent_id = \"{}\"", omega.id),
            vec!["omega-client"],
        ),
        ("prefix = \"a\"", vec!["acme-corp", "alpha-tenant"]),
        ("prefix = ACME", vec!["acme-corp"]),
        ("prefix = omega-c", vec!["omega-client"]),
        ("prefix = \"%\"", vec![]),
        ("prefix = \"_\"", vec![]),
        (
            "status = ACTIVE AND kind = TENANT",
            vec!["acme-corp", "omega-client", "zeta-solo"],
        ),
        (
            "status = ACTIVE and kind = TENANT and prefix = z",
            vec!["zeta-solo"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(slugs(&app, &root, filter, "").await, expected, "{filter}");
    }
    app.stop().await;
}

async fn list_orders_by_name_and_create_time(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // Created out of name order, in mixed case: names sort case-insensitively.
    for name in ["Delta", "bravo", "Echo", "alpha", "Charlie"] {
        create(&app, &root, named(name)).await;
    }
    let by_name = ["alpha", "bravo", "charlie", "delta", "echo", "internal"];
    let by_time = ["internal", "delta", "bravo", "echo", "alpha", "charlie"];
    let reversed = |s: &[&str]| s.iter().rev().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(slugs(&app, &root, "", "").await, by_name);
    assert_eq!(slugs(&app, &root, "", "name").await, by_name);
    assert_eq!(
        slugs(&app, &root, "", "name desc").await,
        reversed(&by_name)
    );
    assert_eq!(slugs(&app, &root, "", "create_time").await, by_time);
    assert_eq!(
        slugs(&app, &root, "", "create_time desc").await,
        reversed(&by_time)
    );
    app.stop().await;
}

async fn list_pages_through_everything_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // Names equal but for case make the id tie-break matter.
    for name in ["Kilo", "alpha", "kilo", "Mike", "Alpha", "bravo", "KILO"] {
        create(&app, &root, named(name)).await;
    }
    assert_eq!(
        slugs(&app, &root, "", "").await,
        [
            "alpha", "alpha-2", "bravo", "internal", "kilo", "kilo-2", "kilo-3", "mike"
        ]
    );
    for order_by in ["", "name desc", "create_time", "create_time desc"] {
        let whole = slugs(&app, &root, "", order_by).await;
        assert_eq!(whole.len(), 8);
        let mut paged = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let request = proto::ListOrganizationsRequest {
                page_size: 2,
                page_token: token.clone(),
                order_by: order_by.into(),
                ..Default::default()
            };
            let page = list(&app, &root, request).await.expect("page");
            pages += 1;
            assert!(page.organizations.len() <= 2);
            paged.extend(page.organizations.into_iter().map(|o| o.slug));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            assert!(pages < 10, "paging does not end");
        }
        assert_eq!(paged, whole, "order_by {order_by:?}");
        assert_eq!(
            paged.iter().collect::<HashSet<_>>().len(),
            8,
            "duplicates with {order_by:?}"
        );
        assert_eq!(pages, 4);
    }
    // A token is bound to its query.
    let first = list(
        &app,
        &root,
        proto::ListOrganizationsRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .expect("first page");
    let request = proto::ListOrganizationsRequest {
        page_size: 2,
        page_token: first.next_page_token,
        order_by: "create_time".into(),
        ..Default::default()
    };
    let mismatch = list(&app, &root, request)
        .await
        .expect_err("token of another query");
    assert_eq!(mismatch.code(), Code::InvalidArgument);
    assert_eq!(violations(&mismatch), ["page_token"]);
    app.stop().await;
}

async fn list_reports_each_orgs_agent_count(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let busy = create(&app, &root, named_on("Busy", "pro")).await;
    let quiet = create(&app, &root, named("Quiet")).await;
    for i in 0..3 {
        register_agent(&app, &root, &busy.id, &format!("Busy {i}")).await;
    }
    register_agent(&app, &root, &quiet.id, "Quiet 0").await;
    register_agent(&app, &root, "", "Spare").await;
    let listed = list(&app, &root, proto::ListOrganizationsRequest::default())
        .await
        .expect("list");
    let counts: Vec<(String, i32)> = listed
        .organizations
        .into_iter()
        .map(|o| (o.slug, o.agent_count))
        .collect();
    assert_eq!(
        counts,
        [
            ("busy".into(), 3),
            ("internal".into(), 1),
            ("quiet".into(), 1)
        ]
    );
    assert_eq!(get(&app, &root, "busy").await.expect("get").agent_count, 3);
    app.stop().await;
}

/// The agent count every way GetOrganization reads `org`: as its member (by id and by
/// slug: the count rides with the auth layer's home row), with its API key (the key's
/// join), as the root admin (another organization: the row and count in one query), and
/// in the list.
async fn agent_counts_of(app: &TestApp, org: &proto::Organization, key: &str) -> Vec<i32> {
    let member = app.token("MEMBER", &org.id);
    let root = app.root();
    let mut counts = Vec::new();
    for (credential, reference) in [
        (member.as_str(), org.id.as_str()),
        (member.as_str(), org.slug.as_str()),
        (key, org.id.as_str()),
        (root.as_str(), org.id.as_str()),
        (root.as_str(), org.slug.as_str()),
    ] {
        let read = get(app, credential, reference).await.expect("get");
        assert_eq!(read.id, org.id);
        counts.push(read.agent_count);
    }
    let listed = list(app, &root, proto::ListOrganizationsRequest::default())
        .await
        .expect("list");
    let row = listed
        .organizations
        .into_iter()
        .find(|o| o.id == org.id)
        .expect("listed");
    counts.push(row.agent_count);
    counts
}

async fn get_and_list_count_agents_as_they_move(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let busy = create(&app, &root, named_on("Busy", "pro")).await;
    let quiet = create(&app, &root, named_on("Quiet", "pro")).await;
    let internal = get(&app, &root, "internal").await.expect("root org");
    let mut keys = Vec::new();
    for org in [&busy, &quiet] {
        let request = proto::RegenerateApiKeyRequest {
            organization_id: org.id.clone(),
        };
        let key = app
            .orgs()
            .regenerate_api_key(authed(request, &app.token("CONFIG_ADMIN", &org.id)))
            .await
            .expect("key")
            .into_inner()
            .api_key;
        keys.push(key);
    }
    let (busy_key, quiet_key) = (&keys[0], &keys[1]);
    assert_eq!(agent_counts_of(&app, &quiet, quiet_key).await, [0; 6]);
    let mut bots = Vec::new();
    for i in 0..3 {
        bots.push(register_agent(&app, &root, &busy.id, &format!("Bot {i}")).await);
    }
    assert_eq!(agent_counts_of(&app, &busy, busy_key).await, [3; 6]);
    // An agent moves to Quiet, another back to the root organization.
    let request = proto::AssignAgentRequest {
        agent_id: bots[0].id.clone(),
        organization_id: quiet.id.clone(),
        ..Default::default()
    };
    app.orgs()
        .assign_agent(authed(request, &root))
        .await
        .expect("assign agent");
    assert_eq!(agent_counts_of(&app, &busy, busy_key).await, [2; 6]);
    assert_eq!(agent_counts_of(&app, &quiet, quiet_key).await, [1; 6]);
    let internal_before = get(&app, &root, &internal.id)
        .await
        .expect("root")
        .agent_count;
    unassign(&app, &bots[1].id).await;
    assert_eq!(agent_counts_of(&app, &busy, busy_key).await, [1; 6]);
    let internal_after = get(&app, &root, &internal.id)
        .await
        .expect("root")
        .agent_count;
    assert_eq!(internal_after, internal_before + 1);
    // The stored assignments agree with what was shown.
    let stored = agents::Entity::find()
        .filter(agents::Column::OrganizationId.eq(org_uuid(&busy.id)))
        .count(app.store.db())
        .await
        .expect("count agents");
    assert_eq!(stored, 1);
    app.stop().await;
}

async fn list_shows_only_what_the_caller_may_see(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (beta, _) = populate(&app).await;
    let agency_admin = app.token("AGENCY_ADMIN", &beta.id);
    assert_eq!(
        slugs(&app, &agency_admin, "", "").await,
        ["acme-corp", "alpha-tenant", "beta-agency"]
    );
    assert_eq!(
        slugs(&app, &agency_admin, "prefix = a", "").await,
        ["acme-corp", "alpha-tenant"]
    );
    let config_admin = app.token("CONFIG_ADMIN", "acme-corp");
    assert_eq!(slugs(&app, &config_admin, "", "").await, ["acme-corp"]);
    assert!(
        slugs(&app, &config_admin, "prefix = omega", "")
            .await
            .is_empty()
    );
    let member = app.token("MEMBER", "zeta-solo");
    assert_eq!(slugs(&app, &member, "", "").await, ["zeta-solo"]);
    let operator = app.token("ROOT_POWER_USER", "internal");
    assert_eq!(slugs(&app, &operator, "", "").await.len(), 7);
    app.stop().await;
}

async fn update_applies_the_mask_and_checks_the_etag(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let original = proto::Organization {
        description: "Mail for agents".into(),
        contact_email: "ops@acme.example".into(),
        ..named("Acme Corp")
    };
    let acme = create(&app, &root, original).await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let change = proto::Organization {
        id: acme.id.clone(),
        name: "Acme Corporation".into(),
        description: "ignored: not in the mask".into(),
        contact_email: "Billing@Acme.example".into(),
        etag: acme.etag.clone(),
        ..Default::default()
    };
    let updated = update(&app, &admin, change.clone(), &["name", "contact_email"])
        .await
        .expect("update");
    assert_eq!(updated.name, "Acme Corporation");
    assert_eq!(updated.contact_email, "billing@acme.example");
    assert_eq!(updated.description, "Mail for agents");
    assert_eq!(updated.slug, "acme-corp");
    assert_ne!(updated.etag, acme.etag);
    // The etag of the first read is stale now.
    let stale = update(
        &app,
        &admin,
        proto::Organization {
            name: "Acme Again".into(),
            ..change.clone()
        },
        &["name"],
    )
    .await
    .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "ETAG_MISMATCH");
    // No etag means no check; the current etag passes.
    let fresh = proto::Organization {
        name: "Acme Again".into(),
        etag: updated.etag.clone(),
        ..change.clone()
    };
    assert_eq!(
        update(&app, &admin, fresh, &["name"])
            .await
            .expect("fresh etag")
            .name,
        "Acme Again"
    );
    let unchecked = proto::Organization {
        description: "".into(),
        etag: String::new(),
        ..change.clone()
    };
    assert_eq!(
        update(&app, &admin, unchecked, &["description"])
            .await
            .expect("no etag")
            .description,
        ""
    );
    let row = org_row(&app, &acme.id).await;
    assert_eq!(
        (row.name.as_str(), row.description.as_str(), row.version),
        ("Acme Again", "", 4)
    );
    let empty_mask = update(&app, &admin, change.clone(), &[])
        .await
        .expect_err("empty mask");
    assert_eq!(violations(&empty_mask), ["update_mask"]);
    let unknown = update(&app, &admin, change, &["status"])
        .await
        .expect_err("output-only field");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert_eq!(violations(&unknown), ["update_mask"]);
    app.stop().await;
}

async fn concurrent_updates_without_an_etag_all_apply(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let request = proto::UpdateOrganizationRequest {
            organization: Some(proto::Organization {
                id: acme.id.clone(),
                description: format!("written by {i}"),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        };
        let request = authed(request, &root);
        let mut client = own_connection(&app);
        tasks.push(tokio::spawn(async move {
            client.update_organization(request).await
        }));
    }
    let mut etags = HashSet::new();
    for task in tasks {
        let updated = task
            .await
            .expect("task")
            .expect("an update without an etag is unconditional");
        etags.insert(
            updated
                .into_inner()
                .organization
                .expect("organization")
                .etag,
        );
    }
    assert_eq!(etags.len(), 8, "two updates produced the same version");
    let row = org_row(&app, &acme.id).await;
    assert_eq!(row.version, 9);
    assert!(row.description.starts_with("written by "));
    app.stop().await;
}

async fn billing_terms_are_set_by_managers_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let beta = agency(&app, "Beta Agency").await;
    let acme = tenant(&app, "Acme Corp", &beta.id).await;
    let rate = |amount: &str| proto::Organization {
        id: acme.id.clone(),
        billing_rate_per_agent: Some(usd(amount)),
        ..Default::default()
    };
    let config_admin = app.token("CONFIG_ADMIN", &acme.id);
    let denied = update(
        &app,
        &config_admin,
        rate("1.00"),
        &["billing_rate_per_agent"],
    )
    .await
    .expect_err("own rate");
    assert_eq!(denied.code(), Code::PermissionDenied);
    for field in ["plan", "usage_limits", "currency"] {
        let denied = update(&app, &config_admin, rate("1.00"), &[field])
            .await
            .expect_err("billing term");
        assert_eq!(denied.code(), Code::PermissionDenied, "{field}");
    }
    assert_eq!(org_row(&app, &acme.id).await.billing_rate_micros, 0);
    let agency_admin = app.token("AGENCY_ADMIN", &beta.id);
    let updated = update(
        &app,
        &agency_admin,
        rate("49.99"),
        &["billing_rate_per_agent"],
    )
    .await
    .expect("agency sets rate");
    assert_eq!(updated.billing_rate_per_agent, Some(usd("49.99")));
    let row = org_row(&app, &acme.id).await;
    assert_eq!((row.billing_rate_micros, row.version), (49_990_000, 2));
    // An agency admin is an ordinary admin of its own agency.
    let own = proto::Organization {
        id: beta.id.clone(),
        billing_rate_per_agent: Some(usd("5.00")),
        ..Default::default()
    };
    let denied = update(&app, &agency_admin, own, &["billing_rate_per_agent"])
        .await
        .expect_err("own agency rate");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Another agency's admin may not touch the tenant at all.
    let omega = agency(&app, "Omega Agency").await;
    let stranger = app.token("AGENCY_ADMIN", &omega.id);
    let denied = update(&app, &stranger, rate("0.01"), &["billing_rate_per_agent"])
        .await
        .expect_err("foreign");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        org_row(&app, &acme.id).await.billing_rate_micros,
        49_990_000
    );
    app.stop().await;
}

async fn deleting_an_org_with_agents_fails_until_they_are_unassigned(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named_on("Acme Corp", "pro")).await;
    let first = register_agent(&app, &root, &acme.id, "Support bot").await;
    let second = register_agent(&app, &root, &acme.id, "Sales bot").await;
    let refused = delete(&app, &root, &acme.id)
        .await
        .expect_err("org has agents");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "ORG_HAS_AGENTS");
    assert_eq!(metadata(&refused, "agent_count").as_deref(), Some("2"));
    assert!(org_row(&app, &acme.id).await.delete_time.is_none());
    unassign(&app, &first.id).await;
    let refused = delete(&app, &root, &acme.id)
        .await
        .expect_err("one agent left");
    assert_eq!(metadata(&refused, "agent_count").as_deref(), Some("1"));
    let back = unassign(&app, &second.id).await;
    let internal = get(&app, &root, "internal").await.expect("root org");
    assert_eq!(back.organization_id, internal.id);
    assert_eq!(
        agent_row(&app, &first.id).await.organization_id,
        org_uuid(&internal.id)
    );
    let stale = proto::DeleteOrganizationRequest {
        organization_id: acme.id.clone(),
        etag: "\"999\"".into(),
        request_id: String::new(),
    };
    let refused = app
        .orgs()
        .delete_organization(authed(stale, &root))
        .await
        .expect_err("stale etag");
    assert_eq!(refused.code(), Code::Aborted);
    assert_eq!(reason(&refused), "ETAG_MISMATCH");
    assert!(org_row(&app, &acme.id).await.delete_time.is_none());
    let deleted = delete(&app, &root, &acme.id).await.expect("delete");
    assert_eq!(deleted.id, acme.id);
    for reference in [acme.id.as_str(), "acme-corp"] {
        let gone = get(&app, &root, reference).await.expect_err("deleted");
        assert_eq!(gone.code(), Code::NotFound);
    }
    assert!(
        !slugs(&app, &root, "", "")
            .await
            .contains(&"acme-corp".to_owned())
    );
    let again = delete(&app, &root, &acme.id)
        .await
        .expect_err("already deleted");
    assert_eq!(again.code(), Code::NotFound);
    // A soft delete: the row stays, marked deleted.
    let row = org_row(&app, &acme.id).await;
    assert!(row.delete_time.is_some());
    // A deleted org's members lose access.
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let refused = get(&app, &admin, &acme.id)
        .await
        .expect_err("deleted home org");
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.stop().await;
}

async fn every_mutation_is_audited(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let acme = create(&app, &root, named("Acme Corp")).await;
    let renamed = proto::Organization {
        id: acme.id.clone(),
        name: "Acme Inc".into(),
        ..Default::default()
    };
    update(&app, &root, renamed, &["name"])
        .await
        .expect("update");
    let mut orgs = app.orgs();
    let deactivate = proto::DeactivateOrganizationRequest {
        organization_id: acme.id.clone(),
        reason: "Non-payment".into(),
        notify_owner: true,
    };
    orgs.deactivate_organization(authed(deactivate, &root))
        .await
        .expect("deactivate");
    let reactivate = proto::ReactivateOrganizationRequest {
        organization_id: acme.id.clone(),
    };
    orgs.reactivate_organization(authed(reactivate, &root))
        .await
        .expect("reactivate");
    let toggle = proto::ToggleOrganizationActiveRequest {
        organization_id: acme.id.clone(),
    };
    orgs.toggle_organization_active(authed(toggle, &root))
        .await
        .expect("toggle");
    let set = proto::SetOrganizationActiveRequest {
        organization_id: acme.id.clone(),
        active: true,
        reason: String::new(),
    };
    orgs.set_organization_active(authed(set, &root))
        .await
        .expect("set active");
    let key = proto::RegenerateApiKeyRequest {
        organization_id: acme.id.clone(),
    };
    orgs.regenerate_api_key(authed(key, &root))
        .await
        .expect("regenerate key");
    delete(&app, &root, &acme.id).await.expect("delete");
    assert_eq!(
        audit_actions(&app, &acme.id).await,
        [
            "CreateOrganization",
            "UpdateOrganization",
            "DeactivateOrganization",
            "ReactivateOrganization",
            "ToggleOrganizationActive",
            "SetOrganizationActive",
            "DeleteOrganization",
        ]
    );
    let acme_uuid = org_uuid(&acme.id);
    let entries = audit_entries::Entity::find()
        .filter(audit_entries::Column::OrganizationId.eq(acme_uuid))
        .all(app.store.db())
        .await
        .expect("read audit");
    assert_eq!(entries.len(), 8);
    let key_entry = entries
        .iter()
        .find(|e| e.action == "RegenerateApiKey")
        .expect("key audited");
    assert_eq!(key_entry.target_type, "api_key");
    let key_row = api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(acme_uuid))
        .one(app.store.db())
        .await
        .expect("read keys")
        .expect("key row");
    assert!(
        !key_entry.summary.contains(&key_row.key_hash),
        "the audit leaks the key hash"
    );
    assert!(
        key_row.revoke_time.is_some(),
        "deleting an org revokes its keys"
    );
    for entry in &entries {
        assert_eq!(entry.actor_kind, "USER");
        assert_eq!(entry.actor_id, "root_admin-user");
        assert!(!entry.request_id.is_empty());
    }
    let deactivation = entries
        .iter()
        .find(|e| e.action == "DeactivateOrganization")
        .expect("deactivation");
    assert!(deactivation.summary.contains("Non-payment"));
    app.stop().await;
}
