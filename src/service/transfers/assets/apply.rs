//! What the asset types share: the transfer under way ([`Run`]), the per-asset results
//! ([`Report`]) and the dispatch of an item to its type.

use uuid::Uuid;

use crate::{
    auth::Principal,
    error::{Error, Result},
    grpc::Ctx,
    proto::{AssetTransferItemStatus as Status, AssetTransferResult, AssetType, TransferMode},
    storage::{Tx, entities::organizations},
};

use super::{addresses, agents, credits, external, flags, members, names::Named, request::Item};

/// Stable reason of an asset skipped because the target has it already.
pub(super) const ALREADY_PRESENT: &str = "ALREADY_PRESENT";

/// A transfer under way, inside its transaction, with both organizations locked.
pub(super) struct Run<'a> {
    pub ctx: &'a Ctx,
    pub tx: &'a Tx,
    pub principal: &'a Principal,
    /// The RPC, as audited.
    pub action: &'static str,
    /// The audit request id.
    pub request_id: &'a str,
    /// The caller's reason (may be empty).
    pub reason: &'a str,
    pub transfer_id: Uuid,
    /// The source as locked at the start.
    pub source: organizations::Model,
    /// The target as locked at the start.
    pub target: organizations::Model,
    pub now: i64,
}

/// The per-asset results of a transfer.
pub(super) struct Report {
    validate_only: bool,
    results: Vec<AssetTransferResult>,
}

impl Report {
    /// An empty report.
    pub fn new(validate_only: bool) -> Self {
        Report {
            validate_only,
            results: Vec::new(),
        }
    }

    /// The results so far.
    pub fn results(&self) -> &[AssetTransferResult] {
        &self.results
    }

    /// The results, in request order.
    pub fn into_results(self) -> Vec<AssetTransferResult> {
        self.results
    }

    /// Records an asset moved or copied (as the item's mode says).
    pub fn done(&mut self, item: &Item, source_id: &str, target_id: &str) {
        let status = match item.mode {
            TransferMode::Copy => Status::Copied,
            _ => Status::Moved,
        };
        self.results.push(AssetTransferResult {
            source_id: source_id.to_owned(),
            target_id: target_id.to_owned(),
            status: status as i32,
            ..base(item)
        });
    }

    /// Records an asset moved with its pair of ledger entries.
    pub fn credited(&mut self, item: &Item, debit_id: String, credit_id: String) {
        self.results.push(AssetTransferResult {
            status: Status::Moved as i32,
            debit_transaction_id: debit_id,
            credit_transaction_id: credit_id,
            ..base(item)
        });
    }

    /// Records an asset left alone, with a stable reason.
    pub fn skipped(
        &mut self,
        item: &Item,
        source_id: &str,
        target_id: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.results.push(AssetTransferResult {
            source_id: source_id.to_owned(),
            target_id: target_id.to_owned(),
            status: Status::Skipped as i32,
            reason: reason.to_owned(),
            message: message.into(),
            ..base(item)
        });
    }

    /// Handles an asset the domain refused: with `validate_only` it becomes a FAILED
    /// result and the transfer goes on; otherwise the error, naming the item and the
    /// asset, fails the call (and the transaction rolls back). Errors that are not
    /// refusals (database, internal) always fail the call.
    pub fn refuse(&mut self, item: &Item, source_id: &str, error: Error) -> Result<()> {
        let Error::Rejected {
            reason, message, ..
        } = &error
        else {
            return Err(error);
        };
        if self.validate_only {
            self.results.push(AssetTransferResult {
                source_id: source_id.to_owned(),
                status: Status::Failed as i32,
                reason: (*reason).to_owned(),
                message: message.clone(),
                ..base(item)
            });
            return Ok(());
        }
        let mut error = error
            .with("item_index", item.index)
            .with("asset_type", item.type_name());
        if !item.external_type.is_empty() {
            error = error.with("external_type", &item.external_type);
        }
        if !source_id.is_empty() {
            error = error.with("asset_id", source_id);
        }
        Err(error)
    }
}

fn base(item: &Item) -> AssetTransferResult {
    AssetTransferResult {
        item_index: item.index,
        asset_type: item.asset_type as i32,
        external_type: item.external_type.clone(),
        ..Default::default()
    }
}

/// FAILED_PRECONDITION `MODE_NOT_SUPPORTED` for COPY of a type that can only move.
pub(super) fn mode_not_supported(item: &Item) -> Error {
    Error::precondition(
        "MODE_NOT_SUPPORTED",
        format!(
            "{} can only be moved, not copied",
            item.type_name().to_lowercase()
        ),
    )
}

/// Pairs the requested assets with the rows found: in request order when ids were
/// given (`None` for ids not found), else every row found.
pub(super) fn requested<'a, T>(
    ids: &'a [Named],
    rows: &'a [T],
    matches: impl Fn(&Named, &T) -> bool,
) -> Vec<(String, Option<&'a T>)> {
    if ids.is_empty() {
        return rows.iter().map(|r| (String::new(), Some(r))).collect();
    }
    ids.iter()
        .map(|named| {
            (
                named.given.clone(),
                rows.iter().find(|row| matches(named, row)),
            )
        })
        .collect()
}

/// Applies one item.
pub(super) async fn item(run: &Run<'_>, item: &Item, report: &mut Report) -> Result<()> {
    match item.asset_type {
        AssetType::Agents => agents::apply(run, item, report).await,
        AssetType::Addresses => addresses::apply(run, item, report).await,
        AssetType::Members => members::apply(run, item, report).await,
        AssetType::FeatureFlags => flags::apply(run, item, report).await,
        AssetType::Credits => credits::apply(run, item, report).await,
        AssetType::External => external::apply(run, item, report).await,
        AssetType::Unspecified => Err(Error::Internal(
            "validated asset type is unspecified".into(),
        )),
    }
}
