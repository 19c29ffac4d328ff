//! EXTERNAL: registered assets of one `external_type`, named by external id. A move
//! changes the registry row's organization (new version), a copy registers the same
//! asset in the target under a new id; an asset the target has registered already is
//! skipped.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};

use crate::{
    domain::ids::{self, IdKind, new_id},
    error::{Error, Result},
    proto::TransferMode,
    storage::entities::external_assets as assets,
};

use super::apply::{ALREADY_PRESENT, Report, Run, requested};
use super::request::Item;

async fn registered(run: &Run<'_>, org_id: uuid::Uuid, item: &Item) -> Result<Vec<assets::Model>> {
    let mut query = assets::Entity::find()
        .filter(assets::Column::OrganizationId.eq(org_id))
        .filter(assets::Column::ExternalType.eq(item.external_type.as_str()))
        .order_by_asc(assets::Column::CreateTime)
        .order_by_asc(assets::Column::Id);
    if !item.ids.is_empty() {
        query = query
            .filter(assets::Column::ExternalId.is_in(item.ids.iter().map(|n| n.given.as_str())));
    }
    Ok(query.all(&**run.tx).await?)
}

/// Copies or moves the item's assets (every asset of the type in the source when no
/// ids are given).
pub(super) async fn apply(run: &Run<'_>, item: &Item, report: &mut Report) -> Result<()> {
    let rows = registered(run, run.source.id, item).await?;
    let mut present = registered(run, run.target.id, item).await?;
    for (given, asset) in requested(&item.ids, &rows, |n, a| n.given == a.external_id) {
        let Some(asset) = asset else {
            let error = Error::not_found(&format!("{} asset", item.external_type), &given);
            report.refuse(item, &given, error)?;
            continue;
        };
        let id = ids::encode(IdKind::ExternalAsset, asset.id);
        if let Some(existing) = present.iter().find(|t| t.external_id == asset.external_id) {
            let existing = ids::encode(IdKind::ExternalAsset, existing.id);
            report.skipped(
                item,
                &id,
                &existing,
                ALREADY_PRESENT,
                "the target has this asset registered already",
            );
            continue;
        }
        let placed = match item.mode {
            TransferMode::Copy => copy(run, asset).await?,
            _ => relocate(run, asset).await?,
        };
        report.done(item, &id, &ids::encode(IdKind::ExternalAsset, placed.id));
        present.push(placed);
    }
    Ok(())
}

async fn copy(run: &Run<'_>, asset: &assets::Model) -> Result<assets::Model> {
    let mut row = asset.clone().into_active_model();
    row.id = Set(new_id());
    row.organization_id = Set(run.target.id);
    row.create_time = Set(run.now);
    row.update_time = Set(run.now);
    row.version = Set(1);
    Ok(row.insert(&**run.tx).await?)
}

async fn relocate(run: &Run<'_>, asset: &assets::Model) -> Result<assets::Model> {
    let mut row = asset.clone().into_active_model();
    row.organization_id = Set(run.target.id);
    row.update_time = Set(run.now);
    row.version = Set(asset.version + 1);
    let moved = assets::Entity::update_many()
        .set(row)
        .filter(assets::Column::Id.eq(asset.id))
        .filter(assets::Column::Version.eq(asset.version))
        .exec(&**run.tx)
        .await?;
    if moved.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    Ok(assets::Model {
        organization_id: run.target.id,
        update_time: run.now,
        version: asset.version + 1,
        ..asset.clone()
    })
}
