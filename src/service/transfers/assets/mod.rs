//! Asset transfers between organizations: TransferAssets (one asset type) and
//! TransferAssetsBulk (up to 20 items of any types), SPEC §7.
//!
//! The caller must be in scope of both organizations. The whole call is one
//! transaction: both organization rows are locked (lower id first), the items are
//! applied in order, and any refused asset rolls everything back and fails the call
//! with the item named in the error details (`item_index`, `asset_type`, `asset_id`).
//! With `validate_only` everything runs the same way, is rolled back, and refused assets
//! are reported as FAILED results instead.
//!
//! Result ids are the assets' row ids (`agt_`, `adr_`, `mem_`, `ast_`; flag names for
//! flags; empty for credits): a copy gets a new id in the target, a move keeps it. An
//! asset already present in the target is SKIPPED and left alone in both
//! organizations, even when moving.

mod addresses;
mod agents;
mod apply;
mod credits;
mod external;
mod flags;
mod members;
mod names;
mod record;
mod request;

use prost::Message;

use crate::{
    auth::{Caller, OrgAccess},
    domain::ids::{self, IdKind, new_id},
    error::{Result, Violations},
    grpc::Ctx,
    proto,
    service::{audit_request_id, commit, idempotency_key, orgs::lock_live, replayed, settle},
    storage::{Tx, entities::organizations},
};

use apply::{Report, Run};
use request::{Item, RawItem};

/// TransferAssets: copies or moves assets of one type from the source to the target.
pub async fn transfer_assets(
    ctx: Ctx,
    caller: Caller,
    req: proto::TransferAssetsRequest,
) -> Result<proto::TransferAssetsResponse> {
    let (source, target) = authorize(
        &ctx,
        &caller,
        &req.source_organization_id,
        &req.target_organization_id,
    )
    .await?;
    let mut v = Violations::new();
    let reason = request::parse_common(
        &mut v,
        &source,
        &target,
        &req.reason,
        &req.request_id,
        req.validate_only,
    );
    let item = request::parse_item(
        &mut v,
        "",
        0,
        RawItem {
            asset_type: req.asset_type,
            external_type: &req.external_type,
            mode: req.mode,
            ids: &req.ids,
            credit_amount: req.credit_amount.as_ref(),
        },
        source.org(),
    );
    v.finish()?;
    let transfer = Transfer {
        method: "TransferAssets",
        source,
        target,
        items: item.into_iter().collect(),
        reason,
        validate_only: req.validate_only,
        request_id: &req.request_id,
    };
    let done = run(&ctx, &caller, transfer, &req).await?;
    Ok(proto::TransferAssetsResponse {
        transfer_id: done.transfer_id,
        results: done.results,
    })
}

/// TransferAssetsBulk: applies 1 to 20 items of any asset types in one transaction.
pub async fn transfer_assets_bulk(
    ctx: Ctx,
    caller: Caller,
    req: proto::TransferAssetsBulkRequest,
) -> Result<proto::TransferAssetsBulkResponse> {
    let (source, target) = authorize(
        &ctx,
        &caller,
        &req.source_organization_id,
        &req.target_organization_id,
    )
    .await?;
    let mut v = Violations::new();
    let reason = request::parse_common(
        &mut v,
        &source,
        &target,
        &req.reason,
        &req.request_id,
        req.validate_only,
    );
    if req.items.is_empty() || req.items.len() > request::MAX_ITEMS {
        v.add(
            "items",
            format!("must list 1 to {} items", request::MAX_ITEMS),
        );
    }
    let mut items = Vec::new();
    for (index, item) in req.items.iter().take(request::MAX_ITEMS).enumerate() {
        let raw = RawItem {
            asset_type: item.asset_type,
            external_type: &item.external_type,
            mode: item.mode,
            ids: &item.ids,
            credit_amount: item.credit_amount.as_ref(),
        };
        let prefix = format!("items[{index}].");
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        items.extend(request::parse_item(
            &mut v,
            &prefix,
            index,
            raw,
            source.org(),
        ));
    }
    v.finish()?;
    let transfer = Transfer {
        method: "TransferAssetsBulk",
        source,
        target,
        items,
        reason,
        validate_only: req.validate_only,
        request_id: &req.request_id,
    };
    run(&ctx, &caller, transfer, &req).await
}

/// Authorizes the caller on both organizations (each reported under its own field).
async fn authorize(
    ctx: &Ctx,
    caller: &Caller,
    source: &str,
    target: &str,
) -> Result<(OrgAccess, OrgAccess)> {
    let source = caller
        .authorize(&ctx.store, "source_organization_id", source)
        .await?;
    let target = caller
        .authorize(&ctx.store, "target_organization_id", target)
        .await?;
    Ok((source, target))
}

/// A validated transfer request.
struct Transfer<'a> {
    method: &'static str,
    source: OrgAccess,
    target: OrgAccess,
    items: Vec<Item>,
    reason: String,
    validate_only: bool,
    request_id: &'a str,
}

/// Runs a transfer in one transaction, idempotently (not with `validate_only`, which
/// stores nothing). Both RPCs answer the same fields, so the stored response is a
/// TransferAssetsBulkResponse for both (keys are per RPC, so they never mix).
async fn run<M: Message>(
    ctx: &Ctx,
    caller: &Caller,
    transfer: Transfer<'_>,
    request: &M,
) -> Result<proto::TransferAssetsBulkResponse> {
    let principal = transfer.source.principal().clone();
    let key = if transfer.validate_only {
        None
    } else {
        idempotency_key(&principal, transfer.method, transfer.request_id, request)?
    };
    let result = async {
        let tx = ctx.store.write().await?;
        // Lock before looking for an earlier result: a concurrent twin holding the locks
        // has committed its result by the time they are ours.
        let (source, target) = lock_pair(&tx, transfer.source.org(), transfer.target.org()).await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let transfer_id = new_id();
        let run = Run {
            ctx,
            tx: &tx,
            principal: &principal,
            action: transfer.method,
            request_id: audit_request_id(caller, key.as_ref()),
            reason: &transfer.reason,
            transfer_id,
            source,
            target,
            now: ctx.store.now(),
        };
        let mut report = Report::new(transfer.validate_only);
        for item in &transfer.items {
            apply::item(&run, item, &mut report).await?;
        }
        if transfer.validate_only {
            // Dropping the transaction rolls everything back.
            return Ok(proto::TransferAssetsBulkResponse {
                transfer_id: String::new(),
                results: report.into_results(),
            });
        }
        record::write(&run, &transfer.items, report.results()).await?;
        let response = proto::TransferAssetsBulkResponse {
            transfer_id: ids::encode(IdKind::AssetTransfer, transfer_id),
            results: report.into_results(),
        };
        commit(ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(ctx, key.as_ref(), result).await
}

/// Locks both organization rows, the lower id first (so opposite transfers between the
/// same pair cannot deadlock), and returns them as they are now.
async fn lock_pair(
    tx: &Tx,
    source: &organizations::Model,
    target: &organizations::Model,
) -> Result<(organizations::Model, organizations::Model)> {
    if source.id < target.id {
        let source = lock_live(tx, source).await?;
        Ok((source, lock_live(tx, target).await?))
    } else {
        let target = lock_live(tx, target).await?;
        Ok((lock_live(tx, source).await?, target))
    }
}
