//! The trail of a transfer: one audit entry in each organization and one
//! `assets.transferred` event for each (seen once by an agency party to its tenant's
//! transfer), sharing the transfer id and a summary of
//! counts per asset type (no secrets: ids, counts, amounts).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    domain::{
        events::types,
        ids::{self, IdKind},
        money::Money,
    },
    error::Result,
    events::outbox,
    grpc::convert,
    proto::{AssetTransferItemStatus as Status, AssetTransferResult},
    service::audit,
    storage::audit::AuditRecord,
};

use super::{
    apply::Run,
    request::{Item, type_name},
};

/// Counts of one item's results.
#[derive(Default, Clone, Copy)]
struct Counts {
    moved: u64,
    copied: u64,
    skipped: u64,
}

impl Counts {
    fn add(&mut self, result: &AssetTransferResult) {
        match Status::try_from(result.status) {
            Ok(Status::Moved) => self.moved += 1,
            Ok(Status::Copied) => self.copied += 1,
            Ok(Status::Skipped) => self.skipped += 1,
            _ => {}
        }
    }

    fn plus(self, other: Counts) -> Counts {
        Counts {
            moved: self.moved + other.moved,
            copied: self.copied + other.copied,
            skipped: self.skipped + other.skipped,
        }
    }

    fn json(self) -> Value {
        json!({ "moved": self.moved, "copied": self.copied, "skipped": self.skipped })
    }
}

/// The summary shared by the audit entries and the events.
fn summary(run: &Run<'_>, items: &[Item], results: &[AssetTransferResult]) -> Value {
    let mut per_item = vec![Counts::default(); items.len()];
    for result in results {
        if let Some(counts) = usize::try_from(result.item_index)
            .ok()
            .and_then(|i| per_item.get_mut(i))
        {
            counts.add(result);
        }
    }
    let mut per_type: BTreeMap<String, Counts> = BTreeMap::new();
    let currency = convert::org_currency(&run.source);
    let mut described = Vec::with_capacity(items.len());
    for (item, counts) in items.iter().zip(&per_item) {
        let name = type_name(item.asset_type).to_lowercase();
        let total = per_type.entry(name).or_default();
        *total = total.plus(*counts);
        let mut entry = Map::new();
        entry.insert("asset_type".into(), json!(item.type_name()));
        entry.insert("mode".into(), json!(item.mode_name()));
        if !item.external_type.is_empty() {
            entry.insert("external_type".into(), json!(item.external_type));
        }
        if item.credit_micros != 0 {
            let amount = Money::from_micros(currency, item.credit_micros).amount_string();
            entry.insert("amount".into(), json!(amount));
            entry.insert("currency".into(), json!(currency.code()));
        }
        if let Value::Object(counts) = counts.json() {
            entry.extend(counts);
        }
        described.push(Value::Object(entry));
    }
    let modes: Vec<&str> = items.iter().map(Item::mode_name).collect();
    let mode = match modes.first() {
        Some(first) if modes.iter().all(|m| m == first) => *first,
        _ => "MIXED",
    };
    let counts: Map<String, Value> = per_type.into_iter().map(|(t, c)| (t, c.json())).collect();
    let mut out = json!({
        "transfer_id": ids::encode(IdKind::AssetTransfer, run.transfer_id),
        "source_organization_id": ids::encode(IdKind::Organization, run.source.id),
        "target_organization_id": ids::encode(IdKind::Organization, run.target.id),
        "mode": mode,
        "counts": counts,
        "items": described,
    });
    if !run.reason.is_empty() {
        out["reason"] = json!(run.reason);
    }
    out
}

/// Audits the transfer in both organizations and emits its event for both (once for an
/// agency that is the other organization's agency: it sees that one's event).
pub(super) async fn write(
    run: &Run<'_>,
    items: &[Item],
    results: &[AssetTransferResult],
) -> Result<()> {
    let summary = summary(run, items, results);
    for org in [&run.source, &run.target] {
        audit(
            run.tx,
            run.ctx,
            run.principal,
            AuditRecord {
                organization_id: org.id,
                action: run.action,
                target_type: "asset_transfer",
                target_id: ids::encode(IdKind::AssetTransfer, run.transfer_id),
                request_id: run.request_id,
                summary: summary.clone(),
            },
        )
        .await?;
    }
    outbox::emit_for_parties(
        run.tx,
        run.now,
        &[&run.source, &run.target],
        types::ASSETS_TRANSFERRED,
        run.request_id,
        summary,
    )
    .await
}
