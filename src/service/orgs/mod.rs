//! Organizations: create, read, list, update, delete, slugs, activation, API keys and
//! self-service registration. This module holds what the use cases share: the root
//! organization, row locks, versioned writes and lookup by reference.

pub(crate) mod activation;
mod api_keys;
mod create;
mod delete;
mod read;
mod register;
mod slugs;
mod update;
mod validation;

pub use activation::{deactivate, reactivate, set_active, toggle_active};
pub use api_keys::regenerate_api_key;
pub(crate) use create::check_agency_room;
pub use create::create;
pub use delete::delete;
pub(crate) use delete::{live_tenants, soft_delete};
pub use read::{escape_like, get, list};
pub use register::register;
pub(crate) use slugs::lock_slug_allocation;
pub use slugs::{check_name, check_slug};
pub use update::update;
pub(crate) use validation::parse_alerts;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::LockType};
use uuid::Uuid;

use crate::{
    domain::{
        ids::{self, IdKind},
        org::OrgKind,
    },
    error::{Error, Result},
    storage::{Tx, entities::organizations},
};

/// The root organization.
pub async fn root_org<C: sea_orm::ConnectionTrait>(db: &C) -> Result<organizations::Model> {
    organizations::Entity::find()
        .filter(organizations::Column::Kind.eq(OrgKind::Root.as_str()))
        .one(db)
        .await?
        .ok_or_else(|| {
            Error::Internal("the root organization is missing; run the migrations".into())
        })
}

/// Locks an organization's row until commit (PostgreSQL `FOR NO KEY UPDATE`, which
/// leaves inserts referencing it alone; SQLite has a single writer) and returns it as
/// it is now.
pub async fn lock_org(tx: &Tx, id: Uuid) -> Result<Option<organizations::Model>> {
    Ok(organizations::Entity::find_by_id(id)
        .lock(LockType::NoKeyUpdate)
        .one(&**tx)
        .await?)
}

/// [`lock_org`] for an organization read earlier, which must still be live: the row as
/// it is now (status and limits may have changed since authorization).
pub async fn lock_live(tx: &Tx, org: &organizations::Model) -> Result<organizations::Model> {
    lock_org(tx, org.id)
        .await?
        .filter(|o| o.delete_time.is_none())
        .ok_or_else(|| Error::not_found("organization", &ids::encode(IdKind::Organization, org.id)))
}

/// Writes an organization row only if its version is still `version` (else ABORTED).
pub async fn save_versioned(
    tx: &Tx,
    row: organizations::ActiveModel,
    id: Uuid,
    version: i64,
) -> Result<organizations::Model> {
    let result = organizations::Entity::update_many()
        .set(row)
        .filter(organizations::Column::Id.eq(id))
        .filter(organizations::Column::Version.eq(version))
        .exec(&**tx)
        .await?;
    if result.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    organizations::Entity::find_by_id(id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::not_found("organization", &ids::encode(IdKind::Organization, id)))
}
