//! Conversions from stored rows to proto messages (requests are parsed in the use cases,
//! which report every bad field at once).

use prost_types::Timestamp;

use crate::{
    domain::{
        ids::{self, IdKind},
        money::{Currency, Money},
        org::{
            AddressKind, AgentStatus, InvitationStatus, MemberRole, OrgKind, OrgStatus, SpendAction,
        },
        plans::{self, Catalogue},
    },
    proto,
    storage::entities::{
        addresses, agent_assignments, agents, audit_entries, invitations, members, organizations,
        pre_approved_signups,
    },
};

/// A stored instant as a proto timestamp.
pub fn timestamp(micros: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    })
}

/// A proto timestamp in stored form, if valid.
pub fn micros(ts: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    ts.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(ts.nanos) / 1_000)
}

/// The currency of a stored organization.
pub fn org_currency(org: &organizations::Model) -> Currency {
    org.currency.parse().unwrap_or(Currency::Usd)
}

/// The effective feature flags of a stored organization: its plan's defaults (the free
/// plan's when the plan left the catalogue) with its overrides applied.
pub fn effective_features(catalogue: &Catalogue, org: &organizations::Model) -> Vec<String> {
    catalogue.features(&org.plan, &plans::parse_overrides(&org.feature_overrides))
}

/// Money in proto form.
pub fn money(value: Money) -> proto::Money {
    proto::Money {
        currency_code: value.currency.code().to_owned(),
        amount: value.amount_string(),
    }
}

/// An organization in proto form.
/// An organization as the API shows it; `features` are its effective flags under
/// `catalogue`.
pub fn organization(
    catalogue: &Catalogue,
    org: &organizations::Model,
    agent_count: u64,
) -> proto::Organization {
    let currency = org_currency(org);
    let thresholds: Vec<u32> = serde_json::from_str(&org.alert_thresholds).unwrap_or_default();
    let emails: Vec<String> = serde_json::from_str(&org.alert_emails).unwrap_or_default();
    proto::Organization {
        id: ids::encode(IdKind::Organization, org.id),
        name: org.name.clone(),
        slug: org.slug.clone(),
        kind: org_kind(org.kind.parse().unwrap_or(OrgKind::Tenant)) as i32,
        parent_id: org
            .parent_id
            .map(|p| ids::encode(IdKind::Organization, p))
            .unwrap_or_default(),
        status: org_status(org.status.parse().unwrap_or(OrgStatus::Inactive)) as i32,
        contact_name: org.contact_name.clone(),
        contact_email: org.contact_email.clone(),
        description: org.description.clone(),
        billing_rate_per_agent: Some(money(Money::from_micros(currency, org.billing_rate_micros))),
        currency: currency.code().to_owned(),
        plan: org.plan.clone(),
        owner: Some(owner(org)),
        usage_limits: Some(proto::UsageLimits {
            monthly_spend_limit: org
                .spend_limit_micros
                .map(|m| money(Money::from_micros(currency, m))),
            max_agents: org.max_agents,
            max_phone_numbers: org.max_phone_numbers,
            max_concurrent_calls: org.max_concurrent_calls,
        }),
        billing_alerts: Some(proto::BillingAlerts {
            alert_thresholds: thresholds,
            alert_emails: emails,
            action_at_100: spend_action(org.alert_action.parse().unwrap_or(SpendAction::NotifyOnly))
                as i32,
        }),
        features: effective_features(catalogue, org),
        agent_count: i32::try_from(agent_count).unwrap_or(i32::MAX),
        deactivation_reason: org.deactivation_reason.clone(),
        create_time: timestamp(org.create_time),
        update_time: timestamp(org.update_time),
        etag: etag(org.version),
    }
}

/// The owner of an organization.
pub fn owner(org: &organizations::Model) -> proto::Owner {
    proto::Owner {
        user_id: org.owner_user_id.clone(),
        email: org.owner_email.clone(),
        name: org.owner_name.clone(),
    }
}

/// An etag from a row version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Kind in proto form.
pub fn org_kind(kind: OrgKind) -> proto::OrganizationKind {
    match kind {
        OrgKind::Root => proto::OrganizationKind::Root,
        OrgKind::Agency => proto::OrganizationKind::Agency,
        OrgKind::Tenant => proto::OrganizationKind::Tenant,
    }
}

/// Status in proto form.
pub fn org_status(status: OrgStatus) -> proto::OrganizationStatus {
    match status {
        OrgStatus::Active => proto::OrganizationStatus::Active,
        OrgStatus::Inactive => proto::OrganizationStatus::Inactive,
        OrgStatus::Cancelled => proto::OrganizationStatus::Cancelled,
    }
}

/// Spend action in proto form.
pub fn spend_action(action: SpendAction) -> proto::SpendLimitAction {
    match action {
        SpendAction::NotifyOnly => proto::SpendLimitAction::NotifyOnly,
        SpendAction::SuspendUsage => proto::SpendLimitAction::SuspendUsage,
    }
}

/// An agent in proto form; `org` is its organization (for the effective rate).
pub fn agent(row: &agents::Model, org: &organizations::Model) -> proto::Agent {
    let currency = org_currency(org);
    let effective = row.billing_rate_micros.unwrap_or(org.billing_rate_micros);
    proto::Agent {
        id: ids::encode(IdKind::Agent, row.id),
        name: row.name.clone(),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        status: match row.status.parse().unwrap_or(AgentStatus::Suspended) {
            AgentStatus::Active => proto::AgentStatus::Active,
            AgentStatus::Suspended => proto::AgentStatus::Suspended,
        } as i32,
        billing_rate: row
            .billing_rate_micros
            .map(|m| money(Money::from_micros(currency, m))),
        effective_billing_rate: Some(money(Money::from_micros(currency, effective))),
        create_time: timestamp(row.create_time),
        update_time: timestamp(row.update_time),
        etag: etag(row.version),
    }
}

/// An assignment period in proto form.
pub fn assignment(row: &agent_assignments::Model) -> proto::AgentAssignment {
    proto::AgentAssignment {
        agent_id: ids::encode(IdKind::Agent, row.agent_id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        assign_time: timestamp(row.assign_time),
        unassign_time: row.unassign_time.and_then(timestamp),
    }
}

/// Member role in proto form.
pub fn member_role(role: MemberRole) -> proto::MemberRole {
    match role {
        MemberRole::Member => proto::MemberRole::Member,
        MemberRole::ConfigAdmin => proto::MemberRole::ConfigAdmin,
        MemberRole::AgencyAdmin => proto::MemberRole::AgencyAdmin,
        MemberRole::RootPowerUser => proto::MemberRole::RootPowerUser,
        MemberRole::RootAdmin => proto::MemberRole::RootAdmin,
    }
}

/// Member role from proto form; `None` for UNSPECIFIED or unknown values.
pub fn member_role_from(value: i32) -> Option<MemberRole> {
    match proto::MemberRole::try_from(value).ok()? {
        proto::MemberRole::Unspecified => None,
        proto::MemberRole::Member => Some(MemberRole::Member),
        proto::MemberRole::ConfigAdmin => Some(MemberRole::ConfigAdmin),
        proto::MemberRole::AgencyAdmin => Some(MemberRole::AgencyAdmin),
        proto::MemberRole::RootPowerUser => Some(MemberRole::RootPowerUser),
        proto::MemberRole::RootAdmin => Some(MemberRole::RootAdmin),
    }
}

/// A member in proto form.
pub fn member(row: &members::Model) -> proto::Member {
    proto::Member {
        id: ids::encode(IdKind::Member, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        user_id: row.user_id.clone(),
        email: row.email.clone(),
        name: row.name.clone(),
        role: member_role(row.role.parse().unwrap_or(MemberRole::Member)) as i32,
        owner: row.is_owner,
        create_time: timestamp(row.create_time),
        etag: etag(row.version),
    }
}

/// An invitation in proto form; a pending one past its expiry shows as EXPIRED.
pub fn invitation(row: &invitations::Model, now: i64) -> proto::Invitation {
    let mut status = row.status.parse().unwrap_or(InvitationStatus::Expired);
    if status == InvitationStatus::Pending && row.expire_time <= now {
        status = InvitationStatus::Expired;
    }
    proto::Invitation {
        id: ids::encode(IdKind::Invitation, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        email: row.email.clone(),
        role: member_role(row.role.parse().unwrap_or(MemberRole::Member)) as i32,
        status: match status {
            InvitationStatus::Pending => proto::InvitationStatus::Pending,
            InvitationStatus::Accepted => proto::InvitationStatus::Accepted,
            InvitationStatus::Revoked => proto::InvitationStatus::Revoked,
            InvitationStatus::Expired => proto::InvitationStatus::Expired,
        } as i32,
        owner: row.is_owner,
        inviter: row.inviter.clone(),
        create_time: timestamp(row.create_time),
        expire_time: timestamp(row.expire_time),
    }
}

/// Address kind in proto form.
pub fn address_kind(kind: AddressKind) -> proto::AddressType {
    match kind {
        AddressKind::Billing => proto::AddressType::Billing,
        AddressKind::Shipping => proto::AddressType::Shipping,
        AddressKind::Mailing => proto::AddressType::Mailing,
    }
}

/// Address kind from proto form; `None` for UNSPECIFIED or unknown values.
pub fn address_kind_from(value: i32) -> Option<AddressKind> {
    match proto::AddressType::try_from(value).ok()? {
        proto::AddressType::Unspecified => None,
        proto::AddressType::Billing => Some(AddressKind::Billing),
        proto::AddressType::Shipping => Some(AddressKind::Shipping),
        proto::AddressType::Mailing => Some(AddressKind::Mailing),
    }
}

/// An address in proto form.
pub fn address(row: &addresses::Model) -> proto::Address {
    proto::Address {
        id: ids::encode(IdKind::Address, row.id),
        r#type: address_kind(row.kind.parse().unwrap_or(AddressKind::Mailing)) as i32,
        line1: row.line1.clone(),
        line2: row.line2.clone(),
        city: row.city.clone(),
        region: row.region.clone(),
        postal_code: row.postal_code.clone(),
        country: row.country.clone(),
        create_time: timestamp(row.create_time),
        update_time: timestamp(row.update_time),
        etag: etag(row.version),
    }
}

/// A pre-approved signup in proto form.
pub fn signup(row: &pre_approved_signups::Model) -> proto::PreApprovedSignup {
    proto::PreApprovedSignup {
        id: ids::encode(IdKind::Signup, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        email: row.email.clone().unwrap_or_default(),
        code: row.code.clone().unwrap_or_default(),
        max_uses: row.max_uses,
        use_count: row.use_count,
        expire_time: row.expire_time.and_then(timestamp),
        create_time: timestamp(row.create_time),
    }
}

/// An audit entry in proto form.
pub fn audit_event(row: &audit_entries::Model) -> proto::AuditEvent {
    proto::AuditEvent {
        id: ids::encode(IdKind::Audit, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        actor_kind: match row.actor_kind.as_str() {
            "USER" => proto::ActorKind::User,
            "API_KEY" => proto::ActorKind::ApiKey,
            "SYSTEM" => proto::ActorKind::System,
            _ => proto::ActorKind::Internal,
        } as i32,
        actor_id: row.actor_id.clone(),
        actor_organization_id: row
            .actor_organization_id
            .map(|o| ids::encode(IdKind::Organization, o))
            .unwrap_or_default(),
        action: row.action.clone(),
        target_type: row.target_type.clone(),
        target_id: row.target_id.clone(),
        request_id: row.request_id.clone(),
        summary: row.summary.clone(),
        create_time: timestamp(row.create_time),
    }
}
