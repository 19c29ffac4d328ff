//! The filter of ListTenantTransfers: status (as shown, so a PENDING transfer past
//! its expiry counts as EXPIRED), the organizations involved, to_self_managed and
//! create_time.

use chrono::DateTime;
use sea_orm::{ColumnTrait, Condition};

use crate::{
    domain::{
        events::TenantTransferStatus,
        filter::{self, Op},
        ids::{self, IdKind},
    },
    error::Violations,
    service::filtering::compare,
    storage::entities::tenant_transfers as transfers,
};

/// The filterable fields and their operators.
pub(super) const FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("status", filter::EQUALITY),
    ("tenant_organization_id", filter::EQUALITY),
    ("source_agency_id", filter::EQUALITY),
    ("target_agency_id", filter::EQUALITY),
    ("to_self_managed", filter::EQUALITY),
    ("create_time", filter::ORDERED),
];

/// Rows whose status as shown at `now` is `status` (a PENDING row past its expiry
/// shows as EXPIRED).
pub(super) fn status_is(status: TenantTransferStatus, now: i64) -> Condition {
    let stored = |s: TenantTransferStatus| transfers::Column::Status.eq(s.as_str());
    match status {
        TenantTransferStatus::Pending => Condition::all()
            .add(stored(TenantTransferStatus::Pending))
            .add(transfers::Column::ExpireTime.gt(now)),
        TenantTransferStatus::Expired => Condition::any()
            .add(stored(TenantTransferStatus::Expired))
            .add(
                Condition::all()
                    .add(stored(TenantTransferStatus::Pending))
                    .add(transfers::Column::ExpireTime.lte(now)),
            ),
        other => Condition::all().add(stored(other)),
    }
}

pub(super) fn parse_status(text: &str) -> Option<TenantTransferStatus> {
    text.strip_prefix("TENANT_TRANSFER_STATUS_")
        .unwrap_or(text)
        .parse()
        .ok()
}

/// An organization-id filter term: an id, or `""` for none (self-managed).
fn org_term(
    v: &mut Violations,
    column: transfers::Column,
    term: &filter::Term,
) -> Option<Condition> {
    if term.value.is_empty() {
        let null = Condition::all().add(column.is_null());
        return Some(if term.op == Op::Eq { null } else { null.not() });
    }
    match ids::decode(IdKind::Organization, &term.value) {
        Ok(id) if term.op == Op::Eq => Some(Condition::all().add(column.eq(id))),
        Ok(id) => Some(Condition::any().add(column.ne(id)).add(column.is_null())),
        Err(e) => {
            v.add("filter", format!("{} {e}", term.field));
            None
        }
    }
}

/// The condition of one filter term, or `None` (reported in `v`) when its value is bad.
pub(super) fn term_condition(
    v: &mut Violations,
    term: &filter::Term,
    now: i64,
) -> Option<Condition> {
    let value = term.value.as_str();
    match term.field.as_str() {
        "status" => match parse_status(value) {
            Some(status) if term.op == Op::Eq => Some(status_is(status, now)),
            Some(status) => Some(status_is(status, now).not()),
            None => {
                v.add(
                    "filter",
                    "status must be PENDING, ACCEPTED, REJECTED, CANCELED or EXPIRED",
                );
                None
            }
        },
        "tenant_organization_id" => org_term(v, transfers::Column::TenantOrganizationId, term),
        "source_agency_id" => org_term(v, transfers::Column::SourceAgencyId, term),
        "target_agency_id" => org_term(v, transfers::Column::TargetAgencyId, term),
        "to_self_managed" => match value.to_ascii_lowercase().as_str() {
            "true" | "false" => {
                let wanted = value.eq_ignore_ascii_case("true") == (term.op == Op::Eq);
                Some(Condition::all().add(transfers::Column::ToSelfManaged.eq(wanted)))
            }
            _ => {
                v.add("filter", "to_self_managed must be true or false");
                None
            }
        },
        _ => match DateTime::parse_from_rfc3339(value) {
            Ok(at) => Some(Condition::all().add(compare(
                transfers::Column::CreateTime,
                term.op,
                at.timestamp_micros(),
            ))),
            Err(_) => {
                v.add(
                    "filter",
                    "create_time must be an RFC 3339 time like 2026-01-01T00:00:00Z",
                );
                None
            }
        },
    }
}
