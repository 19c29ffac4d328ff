//! Domain event types and the states of their deliveries.

use std::str::FromStr;

use crate::domain::org::stored_enum;

/// The event types tenantry emits, by name (`<resource>.<what happened>`). Webhook
/// endpoint filters and WatchEvents `types` accept exactly these.
pub mod types {
    /// An organization was created (CreateOrganization, RegisterOrganization).
    pub const ORGANIZATION_CREATED: &str = "organization.created";
    /// An organization's fields changed.
    pub const ORGANIZATION_UPDATED: &str = "organization.updated";
    /// An organization was deactivated.
    pub const ORGANIZATION_DEACTIVATED: &str = "organization.deactivated";
    /// An organization was reactivated.
    pub const ORGANIZATION_REACTIVATED: &str = "organization.reactivated";
    /// An organization was deleted.
    pub const ORGANIZATION_DELETED: &str = "organization.deleted";
    /// An account was cancelled.
    pub const ACCOUNT_CANCELED: &str = "account.canceled";
    /// A cancelled account was reactivated.
    pub const ACCOUNT_REACTIVATED: &str = "account.reactivated";
    /// An agent was registered.
    pub const AGENT_REGISTERED: &str = "agent.registered";
    /// An agent was assigned to an organization (emitted for the receiving org).
    pub const AGENT_ASSIGNED: &str = "agent.assigned";
    /// An agent left an organization (emitted for the organization it left).
    pub const AGENT_MOVED: &str = "agent.moved";
    /// A member was invited.
    pub const MEMBER_INVITED: &str = "member.invited";
    /// The owner was invited (organization created with an owner email, ownership
    /// transferred to someone not yet a member).
    pub const OWNER_INVITED: &str = "owner.invited";
    /// An invitation was accepted.
    pub const MEMBER_JOINED: &str = "member.joined";
    /// A member was removed.
    pub const MEMBER_REMOVED: &str = "member.removed";
    /// A spend-limit threshold was crossed.
    pub const USAGE_THRESHOLD_CROSSED: &str = "usage.threshold_crossed";
    /// A payment succeeded (credits purchase or add-on purchase).
    pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
    /// A payment failed.
    pub const PAYMENT_FAILED: &str = "payment.failed";
    /// An invoice was issued.
    pub const INVOICE_ISSUED: &str = "invoice.issued";
    /// An invoice was paid.
    pub const INVOICE_PAID: &str = "invoice.paid";
    /// A subscription was created, changed, cancelled, resumed, renewed or fell past due.
    pub const SUBSCRIPTION_CHANGED: &str = "subscription.changed";
    /// Ownership of an organization was transferred.
    pub const OWNERSHIP_TRANSFERRED: &str = "ownership.transferred";
    /// Assets were copied or moved between organizations (emitted for both).
    pub const ASSETS_TRANSFERRED: &str = "assets.transferred";
    /// A tenant transfer was requested.
    pub const TRANSFER_REQUESTED: &str = "transfer.requested";
    /// A tenant transfer was accepted: the tenant's parent changed.
    pub const TRANSFER_ACCEPTED: &str = "transfer.accepted";
    /// A tenant transfer was rejected.
    pub const TRANSFER_REJECTED: &str = "transfer.rejected";
    /// A tenant transfer was cancelled by its requester.
    pub const TRANSFER_CANCELED: &str = "transfer.canceled";
    /// A tenant transfer expired undecided.
    pub const TRANSFER_EXPIRED: &str = "transfer.expired";

    /// Every type, for validating filters.
    pub const ALL: &[&str] = &[
        ORGANIZATION_CREATED,
        ORGANIZATION_UPDATED,
        ORGANIZATION_DEACTIVATED,
        ORGANIZATION_REACTIVATED,
        ORGANIZATION_DELETED,
        ACCOUNT_CANCELED,
        ACCOUNT_REACTIVATED,
        AGENT_REGISTERED,
        AGENT_ASSIGNED,
        AGENT_MOVED,
        MEMBER_INVITED,
        OWNER_INVITED,
        MEMBER_JOINED,
        MEMBER_REMOVED,
        USAGE_THRESHOLD_CROSSED,
        PAYMENT_SUCCEEDED,
        PAYMENT_FAILED,
        INVOICE_ISSUED,
        INVOICE_PAID,
        SUBSCRIPTION_CHANGED,
        OWNERSHIP_TRANSFERRED,
        ASSETS_TRANSFERRED,
        TRANSFER_REQUESTED,
        TRANSFER_ACCEPTED,
        TRANSFER_REJECTED,
        TRANSFER_CANCELED,
        TRANSFER_EXPIRED,
    ];

    /// Whether `name` is a known event type.
    pub fn is_known(name: &str) -> bool {
        ALL.contains(&name)
    }
}

stored_enum! {
    /// State of one webhook delivery (or one email).
    DeliveryStatus {
        Pending => "PENDING",
        Delivered => "DELIVERED",
        /// Dead-lettered after the last attempt failed.
        Dead => "DEAD",
        /// Its endpoint was deleted first.
        Canceled => "CANCELED",
        /// An email written to the log because no SMTP server is configured.
        Logged => "LOGGED",
    }
}

stored_enum! {
    /// Why an email is sent.
    EmailKind {
        OwnerInvitation => "OWNER_INVITATION",
        MemberInvitation => "MEMBER_INVITATION",
        BillingAlert => "BILLING_ALERT",
        DeactivationNotice => "DEACTIVATION_NOTICE",
    }
}

stored_enum! {
    /// State of a tenant transfer.
    TenantTransferStatus {
        Pending => "PENDING",
        Accepted => "ACCEPTED",
        Rejected => "REJECTED",
        Canceled => "CANCELED",
        Expired => "EXPIRED",
    }
}

/// The delay before retry number `failures` (1 = after the first failure): `base`
/// doubled per earlier failure, at most one hour.
pub fn retry_delay_micros(base_micros: i64, failures: u32) -> i64 {
    const HOUR: i64 = 3_600_000_000;
    let shift = failures.saturating_sub(1).min(32);
    base_micros
        .max(1)
        .saturating_mul(1_i64 << shift)
        .min(HOUR.max(base_micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_an_hour() {
        assert_eq!(retry_delay_micros(1_000, 1), 1_000);
        assert_eq!(retry_delay_micros(1_000, 2), 2_000);
        assert_eq!(retry_delay_micros(1_000, 5), 16_000);
        assert_eq!(retry_delay_micros(30_000_000, 20), 3_600_000_000);
    }

    #[test]
    fn every_type_is_known_once() {
        for (i, a) in types::ALL.iter().enumerate() {
            assert!(types::is_known(a));
            assert!(!types::ALL[i + 1..].contains(a), "{a} twice");
        }
        assert!(!types::is_known("organization.exploded"));
        assert_eq!(
            "PENDING".parse::<TenantTransferStatus>(),
            Ok(TenantTransferStatus::Pending)
        );
    }
}
