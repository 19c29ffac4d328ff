//! Profile and addresses: the company record (name, description, contact, interests),
//! the owner, and an address book of billing, shipping and mailing addresses. This
//! module holds what they share: update masks and loading the address book.

mod address_book;
mod address_fields;
mod company;
mod owner;

pub use address_book::{create_address, delete_address, list_addresses, update_address};
pub use company::{get_profile, update_profile};
pub use owner::update_owner;

use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{error::Result, storage::entities::addresses};

/// Most addresses one organization may keep.
pub(crate) const MAX_ADDRESSES: u64 = 50;

async fn org_addresses<C: sea_orm::ConnectionTrait>(
    db: &C,
    org_id: Uuid,
) -> Result<Vec<addresses::Model>> {
    Ok(addresses::Entity::find()
        .filter(addresses::Column::OrganizationId.eq(org_id))
        .order_by(addresses::Column::Id, Order::Asc)
        .limit(MAX_ADDRESSES)
        .all(db)
        .await?)
}

fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}
