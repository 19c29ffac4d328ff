//! Tenant transfers between agencies (SPEC §7, seed 004): a tenant's side (its admins,
//! its agency's admin, operators) asks to move it to another agency or to
//! self-managed; the target agency's admin (a root admin for self-managed, and root
//! admins as platform support for any transfer) accepts or rejects; the requester's
//! side may cancel; an undecided request expires after
//! `settings.events.tenant_transfer_ttl` (14 days by default).
//!
//! Decisions of this implementation, after Stripe Connect account transfers and
//! ZITADEL's organization moves:
//! - One PENDING transfer per tenant (a partial unique index backs the check made under
//!   the tenant's row lock). A pending transfer already past its expiry is written as
//!   EXPIRED before a new request is considered, so a stale request never blocks.
//! - Every state change happens under the tenant's row lock and is also conditional
//!   (`status = 'PENDING' AND version = v`), so of concurrent accept / reject / cancel
//!   exactly one wins; the others get FAILED_PRECONDITION `TRANSFER_NOT_PENDING` (or
//!   ABORTED with a stale etag).
//! - A PENDING transfer past its `expire_time` is shown as EXPIRED (with `decide_time`
//!   = `expire_time`) before the dispatcher's sweep writes it; deciding it writes the
//!   expiry, commits that, and fails with `TRANSFER_EXPIRED`. Expiries are audited by
//!   the internal principal `system:tenant-transfer-expiry`, since nobody decided them.
//! - Acceptance changes only the tenant's `parent_id` (and its version): agents,
//!   members, credits, subscription, billing terms and audit history stay as they are;
//!   the new agency may change the billing terms afterwards. The target agency's plan
//!   limit on tenants (`max_organizations`) binds as for a create.
//! - Events: every change is emitted for the tenant (so its agency at the time sees
//!   it) and for the other agency involved (the target of a request, rejection,
//!   cancellation or expiry; the former agency of an accepted transfer), so both sides'
//!   webhooks hear about it exactly once.

mod access;
mod decide;
mod expire;
mod list;
mod list_filter;
mod moving;
mod read;
mod request;

pub use decide::{accept, cancel, reject};
pub use expire::{cancel_pending_of, expire_due};
pub use list::list;
pub use read::get;
pub use request::request;

use chrono::SecondsFormat;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use std::str::FromStr;
use tonic::Code;
use uuid::Uuid;

use crate::{
    domain::{
        clock::from_micros,
        events::TenantTransferStatus,
        ids::{self, IdKind},
        text,
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::convert,
    proto,
    storage::{
        Tx,
        entities::{organizations, tenant_transfers as transfers},
    },
};

/// Longest note or reason accepted.
const MAX_NOTE_LEN: usize = 1000;

/// Longest principal name stored in `requested_by` / `decided_by`.
const MAX_PRINCIPAL_LEN: usize = 256;

/// Checks an optional note or reason; returns it trimmed.
fn note_of(v: &mut Violations, field: &str, note: &str) -> String {
    v.check(field, text::bounded(note.trim(), MAX_NOTE_LEN))
        .unwrap_or_default()
        .to_owned()
}

/// Parses a transfer id (`xfer_…`).
fn parse_transfer_id(text: &str) -> std::result::Result<Uuid, String> {
    if text.is_empty() {
        return Err("is required".into());
    }
    ids::decode(IdKind::TenantTransfer, text).map_err(|e| e.to_string())
}

/// A principal's name as stored on the transfer.
fn principal_name(author: String) -> String {
    author.chars().take(MAX_PRINCIPAL_LEN).collect()
}

/// The stored status of a row.
fn stored_status(row: &transfers::Model) -> TenantTransferStatus {
    TenantTransferStatus::from_str(&row.status).unwrap_or(TenantTransferStatus::Expired)
}

/// The status as shown at `now`: a PENDING transfer past its expiry is EXPIRED.
fn effective_status(row: &transfers::Model, now: i64) -> TenantTransferStatus {
    match stored_status(row) {
        TenantTransferStatus::Pending if row.expire_time <= now => TenantTransferStatus::Expired,
        status => status,
    }
}

fn status_proto(status: TenantTransferStatus) -> proto::TenantTransferStatus {
    match status {
        TenantTransferStatus::Pending => proto::TenantTransferStatus::Pending,
        TenantTransferStatus::Accepted => proto::TenantTransferStatus::Accepted,
        TenantTransferStatus::Rejected => proto::TenantTransferStatus::Rejected,
        TenantTransferStatus::Canceled => proto::TenantTransferStatus::Canceled,
        TenantTransferStatus::Expired => proto::TenantTransferStatus::Expired,
    }
}

fn org_id(id: Uuid) -> String {
    ids::encode(IdKind::Organization, id)
}

fn rfc3339(micros: i64) -> String {
    from_micros(micros).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A transfer as the API shows it at `now`.
fn to_proto(row: &transfers::Model, now: i64) -> proto::TenantTransfer {
    let status = effective_status(row, now);
    let decide_time = match row.decide_time {
        Some(t) => Some(t),
        None if status == TenantTransferStatus::Expired => Some(row.expire_time),
        None => None,
    };
    proto::TenantTransfer {
        id: ids::encode(IdKind::TenantTransfer, row.id),
        tenant_organization_id: org_id(row.tenant_organization_id),
        source_agency_id: row.source_agency_id.map(org_id).unwrap_or_default(),
        target_agency_id: row.target_agency_id.map(org_id).unwrap_or_default(),
        to_self_managed: row.to_self_managed,
        status: status_proto(status) as i32,
        note: row.note.clone(),
        requested_by: row.requested_by.clone(),
        decided_by: row.decided_by.clone(),
        decision_note: row.decision_note.clone(),
        expire_time: convert::timestamp(row.expire_time),
        create_time: convert::timestamp(row.create_time),
        decide_time: decide_time.and_then(convert::timestamp),
        update_time: convert::timestamp(row.update_time),
        request_id: row.request_id.clone(),
        etag: convert::etag(row.version),
    }
}

/// The event payload of a transfer (ids as TypeIDs, notes as given, no secrets).
fn event_data(row: &transfers::Model, tenant: &organizations::Model) -> Value {
    json!({
        "transfer_id": ids::encode(IdKind::TenantTransfer, row.id),
        "tenant_organization_id": org_id(row.tenant_organization_id),
        "tenant_name": tenant.name,
        "tenant_slug": tenant.slug,
        "source_agency_id": row.source_agency_id.map(org_id),
        "target_agency_id": row.target_agency_id.map(org_id),
        "to_self_managed": row.to_self_managed,
        "status": row.status,
        "note": row.note,
        "decision_note": row.decision_note,
        "expire_time": rfc3339(row.expire_time),
        "decide_time": row.decide_time.map(rfc3339),
    })
}

/// Emits `event_type` for the tenant (as it is now, so its current agency sees it) and
/// for the other agency involved, unless that agency already sees the tenant's event.
async fn emit(
    tx: &Tx,
    now: i64,
    tenant: &organizations::Model,
    other_agency: Option<Uuid>,
    event_type: &'static str,
    request_id: &str,
    data: Value,
) -> Result<()> {
    let agency = match other_agency {
        Some(id) => organizations::Entity::find_by_id(id).one(&**tx).await?,
        None => None,
    };
    let mut parties = vec![tenant];
    parties.extend(agency.as_ref());
    outbox::emit_for_parties(tx, now, &parties, event_type, request_id, data).await
}

/// FAILED_PRECONDITION `TRANSFER_NOT_PENDING`, naming the status it has.
fn not_pending(row: &transfers::Model) -> Error {
    Error::precondition(
        "TRANSFER_NOT_PENDING",
        format!(
            "the transfer is {} and can no longer change",
            row.status.to_lowercase()
        ),
    )
    .with("status", &row.status)
    .with("transfer_id", ids::encode(IdKind::TenantTransfer, row.id))
}

/// FAILED_PRECONDITION `TRANSFER_EXPIRED`.
fn expired(row: &transfers::Model) -> Error {
    Error::precondition(
        "TRANSFER_EXPIRED",
        format!(
            "the transfer expired at {} without a decision",
            rfc3339(row.expire_time)
        ),
    )
    .with("transfer_id", ids::encode(IdKind::TenantTransfer, row.id))
}

/// ALREADY_EXISTS `TRANSFER_PENDING`.
fn already_pending(pending: Option<Uuid>) -> Error {
    let error = Error::rejected(
        Code::AlreadyExists,
        "TRANSFER_PENDING",
        "the tenant already has a pending transfer; cancel it or wait for a decision",
    );
    match pending {
        Some(id) => error.with("transfer_id", ids::encode(IdKind::TenantTransfer, id)),
        None => error,
    }
}
