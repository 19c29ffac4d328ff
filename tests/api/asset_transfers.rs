//! Asset transfers (TransferAssets, TransferAssetsBulk): all-or-nothing bulk moves,
//! validate_only reports, paired credit entries and their concurrency, agents with
//! their history, members, feature flags, external assets, scope rules, and the audit
//! and event trail.

use futures::future::join_all;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use tenantry::{
    domain::ids::{self, IdKind},
    proto::{
        self, AddressType, AssetTransferItemStatus as Status, AssetType, CreditTransactionType,
        TransferMode, tenant_transfer_service_client::TenantTransferServiceClient,
    },
    storage::entities::{addresses, audit_entries, external_assets, members, outbox_events},
};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{
    credits::{all_transactions, balance_amount, gift, succeeded_sum},
    helpers::{Backend, TestApp, authed, metadata, reason, violations},
    on_both_backends,
    organizations::{
        agency_on, create, named, named_on, org_row, org_uuid, register_agent, tenant,
    },
};

on_both_backends!(
    a_failing_item_rolls_back_the_whole_bulk_transfer,
    validate_only_reports_failed_items_and_changes_nothing,
    credits_move_as_a_paired_ledger_entry_once_per_request_id,
    concurrent_credit_transfers_never_overdraw_the_source,
    credits_between_currencies_or_copied_are_refused,
    moved_agents_keep_their_assignment_history,
    members_are_copied_and_moved_but_never_the_owner,
    copied_members_respect_the_targets_team_limit,
    feature_flag_overrides_are_copied_and_moved,
    external_assets_move_and_copy_by_type,
    agency_admins_transfer_only_within_their_agency,
    transfers_are_audited_and_emit_events_for_both_organizations,
    bad_requests_name_every_field,
    external_types_follow_the_registrys_rules,
    an_agency_hears_once_of_assets_moved_from_its_tenant_into_itself,
    a_request_id_reused_with_other_arguments_is_refused,
    a_full_address_book_takes_no_moved_address,
);

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

fn request_id() -> String {
    Uuid::now_v7().to_string()
}

fn usd(amount: &str) -> proto::Money {
    proto::Money {
        currency_code: "USD".into(),
        amount: amount.into(),
    }
}

/// A TransferAssets request of `asset_type` / `mode` with ids.
fn single(
    source: &str,
    target: &str,
    asset_type: AssetType,
    mode: TransferMode,
    ids: &[&str],
) -> proto::TransferAssetsRequest {
    proto::TransferAssetsRequest {
        source_organization_id: source.into(),
        target_organization_id: target.into(),
        asset_type: asset_type as i32,
        mode: mode as i32,
        ids: ids.iter().map(|i| (*i).to_owned()).collect(),
        request_id: request_id(),
        ..Default::default()
    }
}

/// A CREDITS move of `amount` USD.
fn credits(source: &str, target: &str, amount: &str) -> proto::TransferAssetsRequest {
    proto::TransferAssetsRequest {
        credit_amount: Some(usd(amount)),
        ..single(source, target, AssetType::Credits, TransferMode::Move, &[])
    }
}

fn item(asset_type: AssetType, mode: TransferMode, ids: &[&str]) -> proto::AssetTransferItem {
    proto::AssetTransferItem {
        asset_type: asset_type as i32,
        mode: mode as i32,
        ids: ids.iter().map(|i| (*i).to_owned()).collect(),
        ..Default::default()
    }
}

async fn transfer(
    app: &TestApp,
    token: &str,
    request: proto::TransferAssetsRequest,
) -> Result<proto::TransferAssetsResponse, tonic::Status> {
    app.transfers()
        .transfer_assets(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn bulk(
    app: &TestApp,
    token: &str,
    request: proto::TransferAssetsBulkRequest,
) -> Result<proto::TransferAssetsBulkResponse, tonic::Status> {
    app.transfers()
        .transfer_assets_bulk(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

fn statuses(results: &[proto::AssetTransferResult]) -> Vec<(u32, Status)> {
    results
        .iter()
        .map(|r| {
            (
                r.item_index,
                Status::try_from(r.status).expect("item status"),
            )
        })
        .collect()
}

async fn add_address(app: &TestApp, org: &str, city: &str) -> proto::Address {
    app.orgs()
        .create_address(authed(
            proto::CreateAddressRequest {
                organization_id: org.into(),
                address: Some(proto::Address {
                    r#type: AddressType::Billing as i32,
                    line1: "1 Main St".into(),
                    city: city.into(),
                    country: "GB".into(),
                    ..Default::default()
                }),
                request_id: request_id(),
            },
            &app.root(),
        ))
        .await
        .expect("create address")
        .into_inner()
        .address
        .expect("address")
}

async fn address_ids(app: &TestApp, org: &str) -> Vec<String> {
    let mut ids: Vec<String> = app
        .orgs()
        .list_addresses(authed(
            proto::ListAddressesRequest {
                organization_id: org.into(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("list addresses")
        .into_inner()
        .addresses
        .into_iter()
        .map(|a| a.id)
        .collect();
    ids.sort();
    ids
}

async fn agent_orgs(app: &TestApp, agents: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for agent in agents {
        let row = crate::organizations::agent_row(app, agent).await;
        out.push(ids::encode(IdKind::Organization, row.organization_id));
    }
    out
}

async fn transfer_entries(app: &TestApp, org: &str) -> Vec<proto::CreditTransaction> {
    all_transactions(app, org)
        .await
        .into_iter()
        .filter(|t| {
            t.r#type == CreditTransactionType::TransferIn as i32
                || t.r#type == CreditTransactionType::TransferOut as i32
        })
        .collect()
}

async fn add_member(app: &TestApp, org: &str, user: &str, role: &str, owner: bool) -> Uuid {
    let id = Uuid::now_v7();
    members::ActiveModel {
        id: Set(id),
        organization_id: Set(org_uuid(org)),
        user_id: Set(user.into()),
        email: Set(format!("{user}@example.com")),
        name: Set(format!("User {user}")),
        role: Set(role.into()),
        is_owner: Set(owner),
        create_time: Set(1),
        update_time: Set(1),
        version: Set(1),
    }
    .insert(app.store.db())
    .await
    .expect("insert member");
    id
}

/// (user id, role, owner) of an organization's members, sorted.
async fn roster(app: &TestApp, org: &str) -> Vec<(String, String, bool)> {
    let mut out: Vec<_> = members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_uuid(org)))
        .all(app.store.db())
        .await
        .expect("read members")
        .into_iter()
        .map(|m| (m.user_id, m.role, m.is_owner))
        .collect();
    out.sort();
    out
}

async fn set_flag(app: &TestApp, org: &str, flag: &str, enabled: bool) {
    app.orgs()
        .set_feature_flag(authed(
            proto::SetFeatureFlagRequest {
                organization_id: org.into(),
                flag: flag.into(),
                enabled,
            },
            &app.root(),
        ))
        .await
        .expect("set flag");
}

async fn overrides(app: &TestApp, org: &str) -> serde_json::Value {
    serde_json::from_str(&org_row(app, org).await.feature_overrides).expect("overrides JSON")
}

async fn register_external(app: &TestApp, org: &str, kind: &str, external_id: &str) -> Uuid {
    let id = Uuid::now_v7();
    external_assets::ActiveModel {
        id: Set(id),
        organization_id: Set(org_uuid(org)),
        external_type: Set(kind.into()),
        external_id: Set(external_id.into()),
        display_name: Set(format!("{kind} {external_id}")),
        attributes: Set("{}".into()),
        registered_by: Set("test".into()),
        create_time: Set(1),
        update_time: Set(1),
        version: Set(1),
    }
    .insert(app.store.db())
    .await
    .expect("insert external asset");
    id
}

async fn asset_row(app: &TestApp, id: Uuid) -> external_assets::Model {
    external_assets::Entity::find_by_id(id)
        .one(app.store.db())
        .await
        .expect("read asset")
        .expect("asset row")
}

async fn transfer_audits(app: &TestApp) -> Vec<audit_entries::Model> {
    audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetType.eq("asset_transfer"))
        .all(app.store.db())
        .await
        .expect("read audit entries")
}

async fn transfer_events(app: &TestApp) -> Vec<outbox_events::Model> {
    outbox_events::Entity::find()
        .filter(outbox_events::Column::EventType.eq("assets.transferred"))
        .all(app.store.db())
        .await
        .expect("read events")
}

/// A source on `basic` (room for three agents) with two agents, two addresses and
/// 100.00 of credits, and a target on `free` (room for one agent).
struct Fixture {
    source: String,
    target: String,
    agents: Vec<String>,
    addresses: Vec<String>,
}

async fn fixture(app: &TestApp) -> Fixture {
    let root = app.root();
    let source = create(app, &root, named_on("Source Co", "basic")).await.id;
    let target = create(app, &root, named("Target Co")).await.id;
    let mut agents = Vec::new();
    for name in ["Ada", "Bob"] {
        agents.push(register_agent(app, &root, &source, name).await.id);
    }
    let mut addresses = Vec::new();
    for city in ["Leeds", "York"] {
        addresses.push(add_address(app, &source, city).await.id);
    }
    addresses.sort();
    gift(app, &source, "100.00").await;
    Fixture {
        source,
        target,
        agents,
        addresses,
    }
}

fn mixed_bulk(f: &Fixture, validate_only: bool) -> proto::TransferAssetsBulkRequest {
    proto::TransferAssetsBulkRequest {
        source_organization_id: f.source.clone(),
        target_organization_id: f.target.clone(),
        items: vec![
            item(AssetType::Addresses, TransferMode::Move, &[]),
            proto::AssetTransferItem {
                credit_amount: Some(usd("40.00")),
                ..item(AssetType::Credits, TransferMode::Move, &[])
            },
            item(AssetType::Agents, TransferMode::Move, &[]),
        ],
        reason: "customer merger".into(),
        validate_only,
        request_id: if validate_only {
            String::new()
        } else {
            request_id()
        },
    }
}

async fn assert_nothing_moved(app: &TestApp, f: &Fixture) {
    assert_eq!(address_ids(app, &f.source).await, f.addresses);
    assert!(address_ids(app, &f.target).await.is_empty());
    assert_eq!(balance_amount(app, &f.source).await, "100.00");
    assert_eq!(balance_amount(app, &f.target).await, "0.00");
    assert!(transfer_entries(app, &f.source).await.is_empty());
    assert!(transfer_entries(app, &f.target).await.is_empty());
    let agents: Vec<&str> = f.agents.iter().map(String::as_str).collect();
    assert_eq!(
        agent_orgs(app, &agents).await,
        vec![f.source.clone(), f.source.clone()]
    );
    assert!(transfer_audits(app).await.is_empty());
    assert!(transfer_events(app).await.is_empty());
}

// ---------------------------------------------------------------------------
// All or nothing.
// ---------------------------------------------------------------------------

async fn a_failing_item_rolls_back_the_whole_bulk_transfer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let f = fixture(&app).await;
    let refused = bulk(&app, &app.root(), mixed_bulk(&f, false))
        .await
        .expect_err("the second agent does not fit the free plan");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "PLAN_LIMIT_REACHED");
    assert_eq!(metadata(&refused, "item_index").as_deref(), Some("2"));
    assert_eq!(metadata(&refused, "asset_type").as_deref(), Some("AGENTS"));
    assert_eq!(metadata(&refused, "limit").as_deref(), Some("max_agents"));
    let named = metadata(&refused, "asset_id").expect("asset id");
    assert!(f.agents.contains(&named), "{named}");
    assert_nothing_moved(&app, &f).await;
    app.stop().await;
}

async fn validate_only_reports_failed_items_and_changes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let f = fixture(&app).await;
    let report = bulk(&app, &app.root(), mixed_bulk(&f, true))
        .await
        .expect("validate only answers");
    assert!(report.transfer_id.is_empty());
    assert_eq!(
        statuses(&report.results),
        vec![
            (0, Status::Moved),
            (0, Status::Moved),
            (1, Status::Moved),
            (2, Status::Moved),
            (2, Status::Failed),
        ]
    );
    let failed = &report.results[4];
    assert_eq!(failed.reason, "PLAN_LIMIT_REACHED");
    assert!(!failed.message.is_empty());
    assert!(f.agents.contains(&failed.source_id));
    assert!(report.results[2].debit_transaction_id.starts_with("txn_"));
    assert_nothing_moved(&app, &f).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Credits.
// ---------------------------------------------------------------------------

async fn credits_move_as_a_paired_ledger_entry_once_per_request_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Payer", "").await.id;
    let target = tenant(&app, "Payee", "").await.id;
    gift(&app, &source, "100.00").await;
    let request = credits(&source, &target, "30.25");
    let first = transfer(&app, &root, request.clone())
        .await
        .expect("move credits");
    assert!(first.transfer_id.starts_with("atr_"), "{first:?}");
    let result = &first.results[0];
    assert_eq!(result.status, Status::Moved as i32);
    let again = transfer(&app, &root, request).await.expect("retry");
    assert_eq!(again, first, "a retry answers the first result");
    assert_eq!(balance_amount(&app, &source).await, "69.75");
    assert_eq!(balance_amount(&app, &target).await, "30.25");
    let out = transfer_entries(&app, &source).await;
    let into = transfer_entries(&app, &target).await;
    assert_eq!((out.len(), into.len()), (1, 1), "moved once");
    let (debit, credit) = (&out[0], &into[0]);
    assert_eq!(debit.r#type, CreditTransactionType::TransferOut as i32);
    assert_eq!(credit.r#type, CreditTransactionType::TransferIn as i32);
    assert_eq!(debit.amount.as_ref().expect("amount").amount, "-30.25");
    assert_eq!(credit.amount.as_ref().expect("amount").amount, "30.25");
    assert_eq!(debit.id, result.debit_transaction_id);
    assert_eq!(credit.id, result.credit_transaction_id);
    assert_eq!(debit.related_transaction_id, credit.id);
    assert_eq!(credit.related_transaction_id, debit.id);
    assert_eq!(debit.counterparty_organization_id, target);
    assert_eq!(credit.counterparty_organization_id, source);
    for org in [&source, &target] {
        let sum = succeeded_sum(&all_transactions(&app, org).await);
        let balance: rust_decimal::Decimal =
            balance_amount(&app, org).await.parse().expect("decimal");
        assert_eq!(sum, balance, "ledger sum = balance");
    }
    app.stop().await;
}

fn own_client(app: &TestApp) -> TenantTransferServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", app.grpc_port))
        .expect("endpoint")
        .connect_lazy();
    TenantTransferServiceClient::new(channel)
}

async fn concurrent_credit_transfers_never_overdraw_the_source(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Payer", "").await.id;
    let target = tenant(&app, "Payee", "").await.id;
    gift(&app, &source, "30.00").await;
    let calls = (0..8).map(|_| {
        let mut client = own_client(&app);
        let request = authed(credits(&source, &target, "10.00"), &root);
        async move { client.transfer_assets(request).await }
    });
    let outcomes = join_all(calls).await;
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(succeeded, 3, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert_eq!(reason(refused), "INSUFFICIENT_CREDITS");
        assert_eq!(metadata(refused, "asset_type").as_deref(), Some("CREDITS"));
    }
    assert_eq!(balance_amount(&app, &source).await, "0.00");
    assert_eq!(balance_amount(&app, &target).await, "30.00");
    assert_eq!(transfer_entries(&app, &source).await.len(), 3);
    app.stop().await;
}

async fn credits_between_currencies_or_copied_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Dollars", "").await.id;
    let euro = proto::Organization {
        currency: "EUR".into(),
        ..named("Euros")
    };
    let target = create(&app, &root, euro).await.id;
    let other = tenant(&app, "More Dollars", "").await.id;
    gift(&app, &source, "50.00").await;
    let refused = transfer(&app, &root, credits(&source, &target, "10.00"))
        .await
        .expect_err("currency mismatch");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "CURRENCY_MISMATCH");
    assert_eq!(metadata(&refused, "item_index").as_deref(), Some("0"));
    let copy = proto::TransferAssetsRequest {
        mode: TransferMode::Copy as i32,
        ..credits(&source, &other, "10.00")
    };
    let refused = transfer(&app, &root, copy).await.expect_err("copy");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "MODE_NOT_SUPPORTED");
    let wrong = proto::TransferAssetsRequest {
        credit_amount: Some(proto::Money {
            currency_code: "EUR".into(),
            amount: "10.00".into(),
        }),
        ..credits(&source, &other, "10.00")
    };
    let refused = transfer(&app, &root, wrong).await.expect_err("currency");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), vec!["credit_amount.currency_code"]);
    assert_eq!(balance_amount(&app, &source).await, "50.00");
    assert!(transfer_entries(&app, &source).await.is_empty());
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Agents, members, flags, external assets.
// ---------------------------------------------------------------------------

async fn moved_agents_keep_their_assignment_history(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Old Home", "").await.id;
    let target = tenant(&app, "New Home", "").await.id;
    let agent = register_agent(&app, &root, &source, "Ada").await.id;
    let copy = single(&source, &target, AssetType::Agents, TransferMode::Copy, &[]);
    let refused = transfer(&app, &root, copy).await.expect_err("copy");
    assert_eq!(reason(&refused), "MODE_NOT_SUPPORTED");
    let stranger = ids::encode(IdKind::Agent, Uuid::now_v7());
    let missing = single(
        &source,
        &target,
        AssetType::Agents,
        TransferMode::Move,
        &[&stranger],
    );
    let refused = transfer(&app, &root, missing).await.expect_err("unknown");
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(metadata(&refused, "asset_id"), Some(stranger));
    let moved = transfer(
        &app,
        &root,
        single(&source, &target, AssetType::Agents, TransferMode::Move, &[]),
    )
    .await
    .expect("move agents");
    assert_eq!(moved.results.len(), 1);
    assert_eq!(moved.results[0].source_id, agent);
    assert_eq!(moved.results[0].target_id, agent);
    assert_eq!(agent_orgs(&app, &[&agent]).await, vec![target.clone()]);
    let history = app
        .orgs()
        .list_agent_assignments(authed(
            proto::ListAgentAssignmentsRequest {
                agent_id: agent.clone(),
            },
            &root,
        ))
        .await
        .expect("history")
        .into_inner()
        .assignments;
    let orgs: Vec<&str> = history.iter().map(|a| a.organization_id.as_str()).collect();
    assert_eq!(orgs, vec![target.as_str(), source.as_str()]);
    assert!(history[0].unassign_time.is_none());
    assert_eq!(history[1].unassign_time, history[0].assign_time);
    app.stop().await;
}

async fn members_are_copied_and_moved_but_never_the_owner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = agency_on(&app, "Agency", "team").await.id;
    let copy_target = create(&app, &root, named_on("Copies", "team")).await.id;
    let move_target = create(&app, &root, named_on("Moves", "team")).await.id;
    add_member(&app, &source, "olu", "CONFIG_ADMIN", true).await;
    add_member(&app, &source, "ada", "AGENCY_ADMIN", false).await;
    add_member(&app, &source, "bob", "MEMBER", false).await;
    add_member(&app, &move_target, "bob", "MEMBER", false).await;

    let copied = transfer(
        &app,
        &root,
        single(
            &source,
            &copy_target,
            AssetType::Members,
            TransferMode::Copy,
            &[],
        ),
    )
    .await
    .expect("copy members");
    assert_eq!(
        statuses(&copied.results),
        vec![(0, Status::Copied); 3],
        "{copied:?}"
    );
    assert!(copied.results.iter().all(|r| r.source_id != r.target_id));
    assert_eq!(
        roster(&app, &copy_target).await,
        vec![
            ("ada".into(), "CONFIG_ADMIN".into(), false),
            ("bob".into(), "MEMBER".into(), false),
            ("olu".into(), "CONFIG_ADMIN".into(), false),
        ],
        "an agency admin becomes a config admin in a tenant; never the owner"
    );
    assert_eq!(
        roster(&app, &source).await.len(),
        3,
        "a copy keeps the source"
    );

    let owner = single(
        &source,
        &move_target,
        AssetType::Members,
        TransferMode::Move,
        &["olu"],
    );
    let refused = transfer(&app, &root, owner).await.expect_err("owner");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "OWNER_NOT_MOVABLE");

    let moved = transfer(
        &app,
        &root,
        single(
            &source,
            &move_target,
            AssetType::Members,
            TransferMode::Move,
            &[],
        ),
    )
    .await
    .expect("move members");
    let mut outcomes: Vec<(String, i32)> = moved
        .results
        .iter()
        .map(|r| (r.reason.clone(), r.status))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![
            (String::new(), Status::Moved as i32),
            ("ALREADY_PRESENT".into(), Status::Skipped as i32),
            ("OWNER_NOT_MOVABLE".into(), Status::Skipped as i32),
        ]
    );
    assert_eq!(
        roster(&app, &source).await,
        vec![
            ("bob".into(), "MEMBER".into(), false),
            ("olu".into(), "CONFIG_ADMIN".into(), true),
        ]
    );
    assert_eq!(
        roster(&app, &move_target).await,
        vec![
            ("ada".into(), "CONFIG_ADMIN".into(), false),
            ("bob".into(), "MEMBER".into(), false),
        ]
    );
    app.stop().await;
}

async fn copied_members_respect_the_targets_team_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = create(&app, &root, named_on("Big", "team")).await.id;
    let target = tenant(&app, "Small", "").await.id;
    add_member(&app, &source, "ada", "MEMBER", false).await;
    add_member(&app, &source, "bob", "MEMBER", false).await;
    let request = single(
        &source,
        &target,
        AssetType::Members,
        TransferMode::Copy,
        &[],
    );
    let refused = transfer(&app, &root, request).await.expect_err("limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        metadata(&refused, "limit").as_deref(),
        Some("max_team_members")
    );
    assert!(roster(&app, &target).await.is_empty(), "all or nothing");
    app.stop().await;
}

async fn feature_flag_overrides_are_copied_and_moved(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Flags", "").await.id;
    let copies = tenant(&app, "Copies", "").await.id;
    let moves = tenant(&app, "Moves", "").await.id;
    set_flag(&app, &source, "beta", true).await;
    set_flag(&app, &source, "legacy", false).await;
    set_flag(&app, &copies, "beta", true).await;

    let copied = transfer(
        &app,
        &root,
        single(
            &source,
            &copies,
            AssetType::FeatureFlags,
            TransferMode::Copy,
            &[],
        ),
    )
    .await
    .expect("copy flags");
    let by_flag: Vec<(&str, i32)> = copied
        .results
        .iter()
        .map(|r| (r.source_id.as_str(), r.status))
        .collect();
    assert_eq!(
        by_flag,
        vec![
            ("beta", Status::Skipped as i32),
            ("legacy", Status::Copied as i32)
        ]
    );
    assert_eq!(
        overrides(&app, &copies).await,
        serde_json::json!({"beta": true, "legacy": false})
    );

    let unknown = single(
        &source,
        &moves,
        AssetType::FeatureFlags,
        TransferMode::Move,
        &["nope"],
    );
    let refused = transfer(&app, &root, unknown)
        .await
        .expect_err("no override");
    assert_eq!(refused.code(), Code::NotFound);

    let request = single(
        &source,
        &moves,
        AssetType::FeatureFlags,
        TransferMode::Move,
        &["legacy"],
    );
    transfer(&app, &root, request).await.expect("move flag");
    assert_eq!(
        overrides(&app, &source).await,
        serde_json::json!({"beta": true})
    );
    assert_eq!(
        overrides(&app, &moves).await,
        serde_json::json!({"legacy": false})
    );
    app.stop().await;
}

async fn external_assets_move_and_copy_by_type(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Holder", "").await.id;
    let target = tenant(&app, "Receiver", "").await.id;
    let kb1 = register_external(&app, &source, "knowledge_base", "kb-1").await;
    let kb2 = register_external(&app, &source, "knowledge_base", "kb-2").await;
    let site = register_external(&app, &source, "site", "s-1").await;
    register_external(&app, &target, "knowledge_base", "kb-2").await;

    let missing_type = single(
        &source,
        &target,
        AssetType::External,
        TransferMode::Move,
        &[],
    );
    let refused = transfer(&app, &root, missing_type)
        .await
        .expect_err("no type");
    assert_eq!(violations(&refused), vec!["external_type"]);

    let moved = transfer(
        &app,
        &root,
        proto::TransferAssetsRequest {
            external_type: "knowledge_base".into(),
            ..single(
                &source,
                &target,
                AssetType::External,
                TransferMode::Move,
                &[],
            )
        },
    )
    .await
    .expect("move knowledge bases");
    assert_eq!(
        statuses(&moved.results),
        vec![(0, Status::Moved), (0, Status::Skipped)]
    );
    assert_eq!(moved.results[0].external_type, "knowledge_base");
    let row = |id| asset_row(&app, id);
    let kb1_row = row(kb1).await;
    assert_eq!(kb1_row.organization_id, org_uuid(&target));
    assert_eq!(kb1_row.version, 2);
    assert_eq!(
        moved.results[0].target_id,
        ids::encode(IdKind::ExternalAsset, kb1)
    );
    assert_eq!(row(kb2).await.organization_id, org_uuid(&source), "skipped");
    assert_eq!(
        row(site).await.organization_id,
        org_uuid(&source),
        "other type"
    );

    let copied = transfer(
        &app,
        &root,
        proto::TransferAssetsRequest {
            external_type: "site".into(),
            ..single(
                &source,
                &target,
                AssetType::External,
                TransferMode::Copy,
                &["s-1"],
            )
        },
    )
    .await
    .expect("copy site");
    let copy_id = ids::decode(IdKind::ExternalAsset, &copied.results[0].target_id).expect("id");
    assert_ne!(copy_id, site);
    assert_eq!(row(copy_id).await.organization_id, org_uuid(&target));
    assert_eq!(row(site).await.organization_id, org_uuid(&source));
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Scope, trail, validation.
// ---------------------------------------------------------------------------

async fn agency_admins_transfer_only_within_their_agency(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let agency = agency_on(&app, "Reseller", "pro").await.id;
    let other_agency = agency_on(&app, "Rival", "pro").await.id;
    let first = tenant(&app, "First", &agency).await.id;
    let second = tenant(&app, "Second", &agency).await.id;
    let foreign = tenant(&app, "Foreign", &other_agency).await.id;
    let address = add_address(&app, &first, "Leeds").await.id;
    let admin = app.token("AGENCY_ADMIN", &agency);
    let copy = |target: &str| {
        single(
            &first,
            target,
            AssetType::Addresses,
            TransferMode::Copy,
            &[&address],
        )
    };
    transfer(&app, &admin, copy(&second))
        .await
        .expect("between its own tenants");
    transfer(&app, &admin, copy(&agency))
        .await
        .expect("into the agency itself");
    let refused = transfer(&app, &admin, copy(&foreign))
        .await
        .expect_err("another agency's tenant");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let config_admin = app.token("CONFIG_ADMIN", &first);
    let refused = transfer(&app, &config_admin, copy(&second))
        .await
        .expect_err("config admin");
    assert_eq!(refused.code(), Code::PermissionDenied);
    transfer(&app, &app.root(), copy(&foreign))
        .await
        .expect("operators act between unrelated organizations");
    assert_eq!(address_ids(&app, &foreign).await.len(), 1);
    assert_eq!(address_ids(&app, &first).await, vec![address]);
    app.stop().await;
}

async fn transfers_are_audited_and_emit_events_for_both_organizations(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Sender", "").await.id;
    let target = tenant(&app, "Recipient", "").await.id;
    add_address(&app, &source, "Leeds").await;
    gift(&app, &source, "20.00").await;
    let request = proto::TransferAssetsBulkRequest {
        source_organization_id: source.clone(),
        target_organization_id: target.clone(),
        items: vec![
            item(AssetType::Addresses, TransferMode::Copy, &[]),
            proto::AssetTransferItem {
                credit_amount: Some(usd("5.00")),
                ..item(AssetType::Credits, TransferMode::Move, &[])
            },
        ],
        reason: "hand-off".into(),
        request_id: request_id(),
        ..Default::default()
    };
    let done = bulk(&app, &root, request).await.expect("bulk");
    for org in [&source, &target] {
        let entries = app
            .orgs()
            .list_audit_events(authed(
                proto::ListAuditEventsRequest {
                    organization_id: org.clone(),
                    filter: "target_type = asset_transfer".into(),
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect("audit")
            .into_inner()
            .audit_events;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].action, "TransferAssetsBulk");
        assert_eq!(entries[0].target_id, done.transfer_id);
        let summary: serde_json::Value = serde_json::from_str(&entries[0].summary).expect("json");
        assert_eq!(summary["counts"]["addresses"]["copied"], 1);
        assert_eq!(summary["counts"]["credits"]["moved"], 1);
        assert_eq!(summary["reason"], "hand-off");
    }
    let events = transfer_events(&app).await;
    let mut orgs: Vec<Uuid> = events.iter().map(|e| e.organization_id).collect();
    orgs.sort();
    let mut expected = vec![org_uuid(&source), org_uuid(&target)];
    expected.sort();
    assert_eq!(orgs, expected);
    for event in &events {
        let data: serde_json::Value = serde_json::from_str(&event.payload).expect("json");
        assert_eq!(data["transfer_id"], done.transfer_id.as_str());
        assert_eq!(data["source_organization_id"], source.as_str());
        assert_eq!(data["target_organization_id"], target.as_str());
        assert_eq!(data["mode"], "MIXED");
    }
    app.stop().await;
}

async fn bad_requests_name_every_field(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Here", "").await.id;
    let target = tenant(&app, "There", "").await.id;
    let same = proto::TransferAssetsRequest {
        request_id: String::new(),
        reason: "x".repeat(501),
        ..single(
            &source,
            &source,
            AssetType::Unspecified,
            TransferMode::Unspecified,
            &[],
        )
    };
    let refused = transfer(&app, &root, same).await.expect_err("bad");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "asset_type",
            "mode",
            "reason",
            "request_id",
            "target_organization_id"
        ]
    );
    let bad_ids = single(
        &source,
        &target,
        AssetType::Agents,
        TransferMode::Move,
        &["adr_nope", "x", "x"],
    );
    let refused = transfer(&app, &root, bad_ids).await.expect_err("ids");
    assert_eq!(violations(&refused), vec!["ids[0]", "ids[1]", "ids[2]"]);
    let many: Vec<String> = (0..501).map(|i| format!("flag{i}")).collect();
    let too_many = proto::TransferAssetsRequest {
        ids: many,
        ..single(
            &source,
            &target,
            AssetType::FeatureFlags,
            TransferMode::Copy,
            &[],
        )
    };
    let refused = transfer(&app, &root, too_many).await.expect_err("501 ids");
    assert_eq!(violations(&refused), vec!["ids"]);
    let empty = proto::TransferAssetsBulkRequest {
        source_organization_id: source.clone(),
        target_organization_id: target.clone(),
        request_id: request_id(),
        ..Default::default()
    };
    let refused = bulk(&app, &root, empty).await.expect_err("no items");
    assert_eq!(violations(&refused), vec!["items"]);
    let crowded = proto::TransferAssetsBulkRequest {
        source_organization_id: source.clone(),
        target_organization_id: target.clone(),
        items: vec![item(AssetType::Addresses, TransferMode::Copy, &[]); 21],
        request_id: request_id(),
        ..Default::default()
    };
    let refused = bulk(&app, &root, crowded).await.expect_err("21 items");
    assert_eq!(violations(&refused), vec!["items"]);
    let mixed = proto::TransferAssetsBulkRequest {
        source_organization_id: source.clone(),
        target_organization_id: target.clone(),
        items: vec![
            item(AssetType::Addresses, TransferMode::Copy, &[]),
            item(AssetType::Credits, TransferMode::Move, &[]),
        ],
        request_id: request_id(),
        ..Default::default()
    };
    let refused = bulk(&app, &root, mixed).await.expect_err("no amount");
    assert_eq!(violations(&refused), vec!["items[1].credit_amount"]);
    app.stop().await;
}

async fn external_types_follow_the_registrys_rules(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let source = tenant(&app, "Here", "").await.id;
    let target = tenant(&app, "There", "").await.id;
    let asset = register_external(&app, &source, "knowledge_base", "kb-1").await;
    // RegisterAsset refuses these types, so no transfer may name them either.
    for bad in ["knowledge_base_", "knowledge__base", "Knowledge", "2kb"] {
        let request = proto::TransferAssetsRequest {
            external_type: bad.into(),
            ..single(
                &source,
                &target,
                AssetType::External,
                TransferMode::Move,
                &["kb-1"],
            )
        };
        let refused = transfer(&app, &app.root(), request).await.expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}: {refused:?}");
        assert_eq!(violations(&refused), vec!["external_type"], "{bad}");
    }
    assert_eq!(
        asset_row(&app, asset).await.organization_id,
        org_uuid(&source)
    );
    app.stop().await;
}

async fn an_agency_hears_once_of_assets_moved_from_its_tenant_into_itself(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let agency = agency_on(&app, "Reseller", "pro").await.id;
    let tenant_id = tenant(&app, "First", &agency).await.id;
    add_address(&app, &tenant_id, "Leeds").await;
    let done = transfer(
        &app,
        &app.token("AGENCY_ADMIN", &agency),
        single(
            &tenant_id,
            &agency,
            AssetType::Addresses,
            TransferMode::Move,
            &[],
        ),
    )
    .await
    .expect("into the agency");
    let (agency_id, tenant_uuid) = (org_uuid(&agency), org_uuid(&tenant_id));
    let events = transfer_events(&app).await;
    let seen_by_agency: Vec<_> = events
        .iter()
        .filter(|e| e.organization_id == agency_id || e.agency_id == Some(agency_id))
        .collect();
    assert_eq!(seen_by_agency.len(), 1, "{events:?}");
    assert_eq!(
        (
            seen_by_agency[0].organization_id,
            seen_by_agency[0].agency_id
        ),
        (tenant_uuid, Some(agency_id))
    );
    let data: serde_json::Value = serde_json::from_str(&seen_by_agency[0].payload).expect("json");
    assert_eq!(data["transfer_id"], done.transfer_id.as_str());
    assert_eq!(data["target_organization_id"], agency.as_str());
    // Each organization's audit log still records the transfer.
    assert_eq!(transfer_audits(&app).await.len(), 2);
    app.stop().await;
}

async fn a_request_id_reused_with_other_arguments_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let source = tenant(&app, "Here", "").await.id;
    let target = tenant(&app, "There", "").await.id;
    let leeds = add_address(&app, &source, "Leeds").await.id;
    let york = add_address(&app, &source, "York").await.id;
    let first = single(
        &source,
        &target,
        AssetType::Addresses,
        TransferMode::Copy,
        &[&leeds],
    );
    let done = transfer(&app, &root, first.clone()).await.expect("first");
    let replayed = transfer(&app, &root, first.clone()).await.expect("replay");
    assert_eq!(replayed.transfer_id, done.transfer_id);
    let other = proto::TransferAssetsRequest {
        ids: vec![york.clone()],
        mode: TransferMode::Move as i32,
        ..first
    };
    let refused = transfer(&app, &root, other)
        .await
        .expect_err("same request id, other arguments");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(violations(&refused), vec!["request_id"]);
    let mut kept = vec![leeds, york];
    kept.sort();
    assert_eq!(address_ids(&app, &source).await, kept);
    assert_eq!(address_ids(&app, &target).await.len(), 1);
    assert_eq!(transfer_events(&app).await.len(), 2);
    app.stop().await;
}

async fn a_full_address_book_takes_no_moved_address(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let source = tenant(&app, "Here", "").await.id;
    let target = tenant(&app, "There", "").await.id;
    let leeds = add_address(&app, &source, "Leeds").await.id;
    let york = add_address(&app, &source, "York").await.id;
    // The target holds MAX_ADDRESSES (50) already.
    for i in 0..50 {
        addresses::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org_uuid(&target)),
            kind: Set("MAILING".into()),
            line1: Set(format!("{i} High St")),
            line2: Set(String::new()),
            city: Set("Bath".into()),
            region: Set(String::new()),
            postal_code: Set(String::new()),
            country: Set("GB".into()),
            create_time: Set(1),
            update_time: Set(1),
            version: Set(1),
        }
        .insert(app.store.db())
        .await
        .expect("insert address");
    }
    let before = address_ids(&app, &target).await;
    assert_eq!(before.len(), 50);
    let refused = transfer(
        &app,
        &app.root(),
        single(
            &source,
            &target,
            AssetType::Addresses,
            TransferMode::Move,
            &[],
        ),
    )
    .await
    .expect_err("the target's address book is full");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused), "ADDRESS_LIMIT_REACHED");
    assert_eq!(
        metadata(&refused, "asset_type").as_deref(),
        Some("ADDRESSES")
    );
    let mut kept = vec![leeds, york];
    kept.sort();
    assert_eq!(address_ids(&app, &source).await, kept);
    assert_eq!(address_ids(&app, &target).await, before);
    assert!(transfer_audits(&app).await.is_empty());
    assert!(transfer_events(&app).await.is_empty());
    app.stop().await;
}
