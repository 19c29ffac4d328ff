//! Slugs: allocation of a unique slug (explicit, or generated with the first free `-N`
//! suffix) under the creation lock, and the CheckSlugAvailability and
//! CheckOrganizationName questions.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::LockType};
use tonic::Code;

use crate::{
    auth::Caller,
    domain::{org::OrgKind, slug::Slug, text},
    error::{Error, Result},
    grpc::Ctx,
    proto,
    storage::{Tx, entities::organizations},
};

/// Length of a generated slug's prefix that survives every `-N` suffix up to `-99999999`.
const SUFFIX_STEM_LEN: usize = crate::domain::slug::MAX_LEN - 9;

/// Reserves a slug: an explicit one must be free (`SLUG_TAKEN`); a generated one gets
/// the first free `-N` suffix. Deleted organizations keep their slugs forever. The
/// caller holds [`lock_slug_allocation`].
pub(super) async fn choose_slug(
    tx: &Tx,
    explicit: Option<Slug>,
    name: &str,
) -> Result<(Slug, bool)> {
    if let Some(slug) = explicit {
        if slug_taken(&**tx, slug.as_str()).await? {
            return Err(slug_taken_error(slug.as_str()));
        }
        return Ok((slug, false));
    }
    Ok((
        free_generated_slug(&**tx, &Slug::generate(name)).await?,
        true,
    ))
}

/// Serializes organization creation until commit, so concurrent creates of one name
/// get `-2`, `-3`… instead of racing for one slug, and a retry waiting for its twin
/// finds the twin's stored result. Taken before the idempotency lookup. The root
/// organization's row is the lock (PostgreSQL, `FOR NO KEY UPDATE`, which leaves
/// inserts referencing the root alone); SQLite has a single writer already.
pub(crate) async fn lock_slug_allocation(tx: &Tx) -> Result<()> {
    organizations::Entity::find()
        .filter(organizations::Column::Kind.eq(OrgKind::Root.as_str()))
        .lock(LockType::NoKeyUpdate)
        .one(&**tx)
        .await?;
    Ok(())
}

async fn free_generated_slug<C: sea_orm::ConnectionTrait>(db: &C, base: &Slug) -> Result<Slug> {
    // A suffixed candidate may cut the end of a long base (`with_suffix` keeps slugs
    // within 63 characters), so look up every slug sharing the part no suffix of up to
    // nine characters can cut. Slugs hold no LIKE wildcards.
    let stem: String = base.as_str().chars().take(SUFFIX_STEM_LEN).collect();
    let taken: Vec<String> = organizations::Entity::find()
        .select_only()
        .column(organizations::Column::Slug)
        .filter(organizations::Column::Slug.like(format!("{}%", stem.trim_end_matches('-'))))
        .into_tuple()
        .all(db)
        .await?;
    if !taken.iter().any(|s| s == base.as_str()) {
        return Ok(base.clone());
    }
    let mut n = 2;
    loop {
        let candidate = base.with_suffix(n);
        if !taken.iter().any(|s| s == candidate.as_str()) {
            return Ok(candidate);
        }
        n += 1;
    }
}

async fn slug_taken<C: sea_orm::ConnectionTrait>(db: &C, slug: &str) -> Result<bool> {
    Ok(organizations::Entity::find()
        .filter(organizations::Column::Slug.eq(slug))
        .one(db)
        .await?
        .is_some())
}

pub(super) fn slug_taken_error(slug: &str) -> Error {
    Error::rejected(
        Code::AlreadyExists,
        "SLUG_TAKEN",
        format!("slug {slug:?} is taken"),
    )
    .with("slug", slug)
}

/// CheckSlugAvailability.
pub async fn check_slug(
    ctx: Ctx,
    _caller: Caller,
    req: proto::CheckSlugAvailabilityRequest,
) -> Result<proto::CheckSlugAvailabilityResponse> {
    if req.slug.len() > 200 {
        return Err(Error::invalid("slug", "must be at most 63 characters"));
    }
    match Slug::parse(&req.slug) {
        Err(_) => Ok(proto::CheckSlugAvailabilityResponse {
            available: false,
            reason: "INVALID_SLUG".into(),
            suggestion: free_generated_slug(ctx.store.db(), &Slug::generate(&req.slug))
                .await?
                .to_string(),
        }),
        Ok(slug) => {
            let taken = slug_taken(ctx.store.db(), slug.as_str()).await?;
            Ok(proto::CheckSlugAvailabilityResponse {
                available: !taken,
                reason: if taken {
                    "SLUG_TAKEN".into()
                } else {
                    String::new()
                },
                suggestion: free_generated_slug(ctx.store.db(), &slug)
                    .await?
                    .to_string(),
            })
        }
    }
}

/// CheckOrganizationName.
pub async fn check_name(
    ctx: Ctx,
    _caller: Caller,
    req: proto::CheckOrganizationNameRequest,
) -> Result<proto::CheckOrganizationNameResponse> {
    let name = text::name(&req.name, 100).map_err(|e| Error::invalid("name", e))?;
    let base = Slug::generate(&name);
    let free = free_generated_slug(ctx.store.db(), &base).await?;
    let available = free == base;
    Ok(proto::CheckOrganizationNameResponse {
        available,
        suggested_slug: free.to_string(),
        reason: if available {
            String::new()
        } else {
            "SLUG_TAKEN".into()
        },
    })
}
