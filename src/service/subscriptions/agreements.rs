//! Service agreements (SPEC §6, seed 001): GetAgreement, AcceptAgreement,
//! ListAgreements, RevokeAgreement.
//!
//! An organization has at most one ACTIVE agreement per service: accepting (only the
//! current terms version) supersedes the previous one, revoking ends it. Both take the
//! organization's row lock, like PurchaseService, which checks the agreement under that
//! lock. Revoking does not end purchases already made; it only refuses new ones.

mod change;
mod list;

pub use change::{accept_agreement, revoke_agreement};
pub use list::list_agreements;

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        ids::{self, IdKind},
        plans::{Addon, Catalogue, Terms},
        subscription::AgreementStatus,
    },
    error::{Error, Result, Violations},
    grpc::{
        Ctx,
        convert::{etag, timestamp},
    },
    proto,
    storage::entities::service_agreements as agreements,
};

use super::addons::{check_service_id, find_addon};

/// A service's terms as proto.
pub fn terms_proto(service_id: &str, terms: &Terms) -> proto::ServiceTerms {
    proto::ServiceTerms {
        service_id: service_id.to_owned(),
        version: terms.version.clone(),
        title: terms.title.clone(),
        text: terms.text.clone(),
        url: terms.url.clone(),
        effective_time: timestamp(terms.effective_time),
    }
}

/// An agreement status as proto.
pub fn status_proto(status: AgreementStatus) -> proto::ServiceAgreementStatus {
    match status {
        AgreementStatus::Active => proto::ServiceAgreementStatus::Active,
        AgreementStatus::Revoked => proto::ServiceAgreementStatus::Revoked,
        AgreementStatus::Superseded => proto::ServiceAgreementStatus::Superseded,
    }
}

/// An agreement row as proto; `current_version` is judged against `catalogue`.
pub fn to_proto(row: &agreements::Model, catalogue: &Catalogue) -> proto::ServiceAgreement {
    let metadata: BTreeMap<String, String> =
        serde_json::from_str(&row.metadata).unwrap_or_default();
    proto::ServiceAgreement {
        id: ids::encode(IdKind::Agreement, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        service_id: row.service_id.clone(),
        version: row.terms_version.clone(),
        status: row
            .status
            .parse()
            .map(status_proto)
            .unwrap_or(proto::ServiceAgreementStatus::Unspecified) as i32,
        current_version: catalogue
            .addon(&row.service_id)
            .and_then(|a| a.terms.as_ref())
            .is_some_and(|t| t.version == row.terms_version),
        metadata,
        accepted_by: row.accepted_by.clone(),
        accept_time: timestamp(row.accept_time),
        revoked_by: row.revoked_by.clone(),
        revoke_time: row.revoke_time.and_then(timestamp),
        revoke_reason: row.revoke_reason.clone(),
        request_id: row.request_id.clone(),
        etag: etag(row.version),
    }
}

/// The organization's ACTIVE agreement for a service, if any (read under the
/// organization's lock by writers).
pub async fn active<C: ConnectionTrait>(
    db: &C,
    org_id: Uuid,
    service_id: &str,
) -> Result<Option<agreements::Model>> {
    Ok(agreements::Entity::find()
        .filter(agreements::Column::OrganizationId.eq(org_id))
        .filter(agreements::Column::ServiceId.eq(service_id))
        .filter(agreements::Column::Status.eq(AgreementStatus::Active.as_str()))
        .order_by_desc(agreements::Column::AcceptTime)
        .one(db)
        .await?)
}

/// The agreement a purchase of `addon` rests on: `None` for a service without terms,
/// the ACTIVE agreement for the current terms version otherwise; FAILED_PRECONDITION
/// `AGREEMENT_REQUIRED` (with the service and version) when there is none.
pub async fn require<C: ConnectionTrait>(
    db: &C,
    org_id: Uuid,
    addon: &Addon,
) -> Result<Option<Uuid>> {
    let Some(terms) = &addon.terms else {
        return Ok(None);
    };
    match active(db, org_id, &addon.id).await? {
        Some(found) if found.terms_version == terms.version => Ok(Some(found.id)),
        _ => Err(Error::precondition(
            "AGREEMENT_REQUIRED",
            format!(
                "{} requires accepting its terms version {} first (AcceptAgreement)",
                addon.name, terms.version
            ),
        )
        .with("service_id", &addon.id)
        .with("version", &terms.version)),
    }
}

/// GetAgreement: the service's current terms and the organization's ACTIVE agreement.
pub async fn get_agreement(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetAgreementRequest,
) -> Result<proto::GetAgreementResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    check_service_id(&mut v, &req.service_id);
    v.finish()?;
    let addon = find_addon(&ctx, &req.service_id)?;
    let catalogue = &ctx.settings.billing.catalogue;
    let agreement = active(ctx.store.db(), access.org().id, &addon.id).await?;
    Ok(proto::GetAgreementResponse {
        terms: addon.terms.as_ref().map(|t| terms_proto(&addon.id, t)),
        agreement: agreement.map(|a| to_proto(&a, catalogue)),
    })
}
