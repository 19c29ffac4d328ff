//! What a run of the cycle did, as the RPC response and as the CLI's JSON.

use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{
        clock::from_micros,
        ids::{self, IdKind},
    },
    grpc::convert::timestamp,
    proto,
};

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The instant the run was made as of.
    pub at: i64,
    /// Periods closed.
    pub periods_closed: u32,
    /// Scheduled plan or interval changes applied at a period end.
    pub scheduled_changes_applied: u32,
    /// Subscriptions ended at their period end.
    pub subscriptions_canceled: u32,
    /// Subscriptions moved to PAST_DUE.
    pub subscriptions_past_due: u32,
    /// PAST_DUE subscriptions without an overdue invoice any more, back to ACTIVE.
    pub subscriptions_reactivated: u32,
    /// Invoices issued, in order.
    pub invoice_ids: Vec<Uuid>,
    /// Of those, paid from credits at issue.
    pub invoices_paid: u32,
    /// Cancelled accounts whose data was deleted.
    pub accounts_deleted: u32,
    /// Subscriptions left to the next run because another writer kept their rows.
    pub deferred: u32,
    /// Subscriptions that failed (logged); retried by the next run.
    pub failed: u32,
}

impl Summary {
    /// The RPC response.
    pub fn to_proto(&self) -> proto::RunBillingCycleResponse {
        let small = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        proto::RunBillingCycleResponse {
            at: timestamp(self.at),
            periods_closed: small(self.periods_closed),
            scheduled_changes_applied: small(self.scheduled_changes_applied),
            subscriptions_canceled: small(self.subscriptions_canceled),
            subscriptions_past_due: small(self.subscriptions_past_due),
            invoice_ids: self
                .invoice_ids
                .iter()
                .map(|id| ids::encode(IdKind::Invoice, *id))
                .collect(),
            invoices_paid: small(self.invoices_paid),
        }
    }

    /// The summary as JSON (what `tenantry billing-cycle` prints).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "at": from_micros(self.at).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "periods_closed": self.periods_closed,
            "scheduled_changes_applied": self.scheduled_changes_applied,
            "subscriptions_canceled": self.subscriptions_canceled,
            "subscriptions_past_due": self.subscriptions_past_due,
            "subscriptions_reactivated": self.subscriptions_reactivated,
            "invoice_ids": self
                .invoice_ids
                .iter()
                .map(|id| ids::encode(IdKind::Invoice, *id))
                .collect::<Vec<_>>(),
            "invoices_paid": self.invoices_paid,
            "accounts_deleted": self.accounts_deleted,
            "deferred": self.deferred,
            "failed": self.failed,
        })
    }
}
