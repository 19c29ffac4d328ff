//! ADDRESSES: a copy is a new row (new id) in the target, a move changes the row's
//! organization. An identical address (same type and lines) already in the target is
//! skipped; the target's address book keeps its limit.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};

use crate::{
    domain::ids::{self, IdKind, new_id},
    error::{Error, Result},
    proto::TransferMode,
    service::profile::MAX_ADDRESSES,
    storage::entities::addresses,
};

use super::apply::{ALREADY_PRESENT, Report, Run, requested};
use super::request::Item;

/// Whether two addresses are the same entry.
fn same(a: &addresses::Model, b: &addresses::Model) -> bool {
    (
        &a.kind,
        &a.line1,
        &a.line2,
        &a.city,
        &a.region,
        &a.postal_code,
        &a.country,
    ) == (
        &b.kind,
        &b.line1,
        &b.line2,
        &b.city,
        &b.region,
        &b.postal_code,
        &b.country,
    )
}

async fn book(run: &Run<'_>, org_id: uuid::Uuid) -> Result<Vec<addresses::Model>> {
    Ok(addresses::Entity::find()
        .filter(addresses::Column::OrganizationId.eq(org_id))
        .order_by_asc(addresses::Column::Id)
        .all(&**run.tx)
        .await?)
}

/// Copies or moves the item's addresses (every address of the source when no ids).
pub(super) async fn apply(run: &Run<'_>, item: &Item, report: &mut Report) -> Result<()> {
    let rows = book(run, run.source.id).await?;
    let mut target_book = book(run, run.target.id).await?;
    for (given, address) in requested(&item.ids, &rows, |n, a| n.uuid == Some(a.id)) {
        let Some(address) = address else {
            report.refuse(item, &given, Error::not_found("address", &given))?;
            continue;
        };
        let id = ids::encode(IdKind::Address, address.id);
        if let Some(existing) = target_book.iter().find(|t| same(t, address)) {
            let existing = ids::encode(IdKind::Address, existing.id);
            report.skipped(
                item,
                &id,
                &existing,
                ALREADY_PRESENT,
                "the target has an identical address",
            );
            continue;
        }
        if target_book.len() as u64 >= MAX_ADDRESSES {
            let error = Error::precondition(
                "ADDRESS_LIMIT_REACHED",
                format!("an organization keeps at most {MAX_ADDRESSES} addresses"),
            )
            .with("limit", MAX_ADDRESSES);
            report.refuse(item, &id, error)?;
            continue;
        }
        let placed = match item.mode {
            TransferMode::Copy => copy(run, address).await?,
            _ => relocate(run, address).await?,
        };
        report.done(item, &id, &ids::encode(IdKind::Address, placed.id));
        target_book.push(placed);
    }
    Ok(())
}

async fn copy(run: &Run<'_>, address: &addresses::Model) -> Result<addresses::Model> {
    let mut row = address.clone().into_active_model();
    row.id = Set(new_id());
    row.organization_id = Set(run.target.id);
    row.create_time = Set(run.now);
    row.update_time = Set(run.now);
    row.version = Set(1);
    Ok(row.insert(&**run.tx).await?)
}

async fn relocate(run: &Run<'_>, address: &addresses::Model) -> Result<addresses::Model> {
    let mut row = address.clone().into_active_model();
    row.organization_id = Set(run.target.id);
    row.update_time = Set(run.now);
    row.version = Set(address.version + 1);
    let moved = addresses::Entity::update_many()
        .set(row)
        .filter(addresses::Column::Id.eq(address.id))
        .filter(addresses::Column::Version.eq(address.version))
        .exec(&**run.tx)
        .await?;
    if moved.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    Ok(addresses::Model {
        organization_id: run.target.id,
        update_time: run.now,
        version: address.version + 1,
        ..address.clone()
    })
}
