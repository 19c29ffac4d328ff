//! FEATURE_FLAGS: the source's per-organization overrides (flag → enabled), named by
//! flag. A copy sets the same override on the target, a move also clears it from the
//! source; an override the target has already with the same value is skipped.

use sea_orm::ActiveValue::Set;

use crate::{
    domain::plans::{self, Overrides},
    error::{Error, Result},
    proto::TransferMode,
    service::orgs::{self, lock_org},
    storage::entities::organizations,
};

use super::apply::{ALREADY_PRESENT, Report, Run, requested};
use super::request::Item;

/// The organization's row as it is now (already locked by the transfer).
async fn current(run: &Run<'_>, id: uuid::Uuid) -> Result<organizations::Model> {
    lock_org(run.tx, id)
        .await?
        .ok_or_else(|| Error::Internal("a locked organization vanished".into()))
}

/// Copies or moves the item's overrides (every override of the source when no ids).
pub(super) async fn apply(run: &Run<'_>, item: &Item, report: &mut Report) -> Result<()> {
    let source = current(run, run.source.id).await?;
    let target = current(run, run.target.id).await?;
    let source_before = plans::parse_overrides(&source.feature_overrides);
    let mut source_after = source_before.clone();
    let target_before = plans::parse_overrides(&target.feature_overrides);
    let mut target_after = target_before.clone();
    let flags: Vec<(String, bool)> = source_before.iter().map(|(f, e)| (f.clone(), *e)).collect();
    for (given, flag) in requested(&item.ids, &flags, |n, (f, _)| n.given == *f) {
        let Some((flag, enabled)) = flag else {
            let error = Error::not_found("feature flag override", &given);
            report.refuse(item, &given, error)?;
            continue;
        };
        if target_after.get(flag) == Some(enabled) {
            report.skipped(
                item,
                flag,
                flag,
                ALREADY_PRESENT,
                "the target has the same override",
            );
            continue;
        }
        target_after.insert(flag.clone(), *enabled);
        if item.mode == TransferMode::Move {
            source_after.remove(flag);
        }
        report.done(item, flag, flag);
    }
    save(run, &target, &target_before, &target_after).await?;
    save(run, &source, &source_before, &source_after).await
}

/// Writes changed overrides with a new version (nothing when unchanged).
async fn save(
    run: &Run<'_>,
    org: &organizations::Model,
    before: &Overrides,
    after: &Overrides,
) -> Result<()> {
    if before == after {
        return Ok(());
    }
    let stored = serde_json::to_string(after)
        .map_err(|e| Error::Internal(format!("feature overrides as JSON: {e}")))?;
    let row = organizations::ActiveModel {
        feature_overrides: Set(stored),
        update_time: Set(run.now),
        version: Set(org.version + 1),
        ..Default::default()
    };
    orgs::save_versioned(run.tx, row, org.id, org.version).await?;
    Ok(())
}
