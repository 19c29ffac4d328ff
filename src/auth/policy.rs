//! The one policy table: every RPC of the four services, who may call it, and (through
//! the caller's role) on which organizations.
//!
//! Scope follows from the role: operators (SYSTEM, ROOT_ADMIN, ROOT_POWER_USER) act on
//! any organization; an AGENCY_ADMIN on its agency and the agency's tenants; everyone
//! else (CONFIG_ADMIN, MEMBER, API key) on its own organization only. A user without a
//! role (`USER`) may only call untargeted RPCs such as signup and invitation acceptance.

use crate::{
    auth::{Principal, Relation},
    domain::org::OrgStatus,
    storage::entities::organizations,
};

/// The role a caller is checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallerRole {
    /// Authenticated user holding no role (e.g. before signing up).
    User,
    /// An organization API key.
    ApiKey,
    /// Ordinary member of one organization.
    Member,
    /// Admin of one organization.
    ConfigAdmin,
    /// Admin of an agency.
    AgencyAdmin,
    /// Power user of the root organization.
    RootPowerUser,
    /// Admin of the root organization.
    RootAdmin,
    /// Trusted internal service.
    System,
}

impl CallerRole {
    /// Every role, for exhaustive tests.
    pub const ALL: [CallerRole; 8] = [
        CallerRole::User,
        CallerRole::ApiKey,
        CallerRole::Member,
        CallerRole::ConfigAdmin,
        CallerRole::AgencyAdmin,
        CallerRole::RootPowerUser,
        CallerRole::RootAdmin,
        CallerRole::System,
    ];

    /// Parses a role name from a token (`CONFIG_ADMIN`, or `ROLE_CONFIG_ADMIN`).
    pub fn from_token(name: &str) -> Option<CallerRole> {
        match name.strip_prefix("ROLE_").unwrap_or(name) {
            "MEMBER" => Some(CallerRole::Member),
            "CONFIG_ADMIN" => Some(CallerRole::ConfigAdmin),
            "AGENCY_ADMIN" => Some(CallerRole::AgencyAdmin),
            "ROOT_POWER_USER" => Some(CallerRole::RootPowerUser),
            "ROOT_ADMIN" => Some(CallerRole::RootAdmin),
            "SYSTEM" => Some(CallerRole::System),
            _ => None,
        }
    }

    /// The token name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            CallerRole::User => "USER",
            CallerRole::ApiKey => "API_KEY",
            CallerRole::Member => "MEMBER",
            CallerRole::ConfigAdmin => "CONFIG_ADMIN",
            CallerRole::AgencyAdmin => "AGENCY_ADMIN",
            CallerRole::RootPowerUser => "ROOT_POWER_USER",
            CallerRole::RootAdmin => "ROOT_ADMIN",
            CallerRole::System => "SYSTEM",
        }
    }

    /// Operators act on every organization.
    pub fn is_operator(self) -> bool {
        matches!(
            self,
            CallerRole::System | CallerRole::RootAdmin | CallerRole::RootPowerUser
        )
    }

    /// Roles bound to one organization, refused while it is not active.
    pub fn is_org_bound(self) -> bool {
        matches!(
            self,
            CallerRole::ApiKey
                | CallerRole::Member
                | CallerRole::ConfigAdmin
                | CallerRole::AgencyAdmin
        )
    }
}

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials.
    Public,
    /// The listed roles.
    Roles(&'static [CallerRole]),
}

/// One row of the policy table.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Full gRPC service name, e.g. `tenantry.v1.OrganizationService`.
    pub service: &'static str,
    /// Method name, e.g. `GetOrganization`.
    pub method: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Whether members and keys of an inactive organization may still call it.
    pub while_inactive: bool,
    /// Whether the RPC acts on an organization it names (scope-checked by the handler).
    pub targeted: bool,
    /// Whether its answer shows the agent count of the organization it reads. The auth
    /// layer then reads the count with the caller's home organization (a scalar
    /// sub-select of the same query), so a caller reading its own organization costs one
    /// query in all; the other RPCs do not pay for the count.
    pub counts_agents: bool,
}

impl Rule {
    /// Whether `role` may call this RPC at all.
    pub fn admits(&self, role: CallerRole) -> bool {
        match self.access {
            Access::Public => true,
            Access::Roles(roles) => roles.contains(&role),
        }
    }
}

use CallerRole::*;

/// Every role with credentials for an organization, keys included.
pub const READ: &[CallerRole] = &[
    System,
    RootAdmin,
    RootPowerUser,
    AgencyAdmin,
    ConfigAdmin,
    Member,
    ApiKey,
];
/// Every member role, no keys.
pub const READ_USERS: &[CallerRole] = &[
    System,
    RootAdmin,
    RootPowerUser,
    AgencyAdmin,
    ConfigAdmin,
    Member,
];
/// Admins of the organization and above.
pub const ADMIN: &[CallerRole] = &[System, RootAdmin, RootPowerUser, AgencyAdmin, ConfigAdmin];
/// Those who manage an organization from above: its agency and operators.
pub const MANAGER: &[CallerRole] = &[System, RootAdmin, RootPowerUser, AgencyAdmin];
/// Platform operators.
pub const OPERATOR: &[CallerRole] = &[System, RootAdmin, RootPowerUser];
/// The root admin alone.
pub const ROOT_ADMIN: &[CallerRole] = &[RootAdmin];
/// Any authenticated principal, keys included.
pub const ANYONE: &[CallerRole] = &[
    User,
    ApiKey,
    Member,
    ConfigAdmin,
    AgencyAdmin,
    RootPowerUser,
    RootAdmin,
    System,
];
/// Any authenticated user (JWT), with or without a role. Not SYSTEM: a service is not a
/// person who can accept an invitation or own an organization.
pub const USERS: &[CallerRole] = &[
    User,
    Member,
    ConfigAdmin,
    AgencyAdmin,
    RootPowerUser,
    RootAdmin,
];
/// Usage recorders.
pub const RECORDERS: &[CallerRole] = &[System, ApiKey];

const ORG: &str = "tenantry.v1.OrganizationService";
const BILLING: &str = "tenantry.v1.BillingService";
const SUBSCRIPTION: &str = "tenantry.v1.SubscriptionService";
const TRANSFER: &str = "tenantry.v1.TenantTransferService";

const fn on(service: &'static str, method: &'static str, roles: &'static [CallerRole]) -> Rule {
    Rule {
        service,
        method,
        access: Access::Roles(roles),
        while_inactive: false,
        targeted: true,
        counts_agents: false,
    }
}

const fn untargeted(
    service: &'static str,
    method: &'static str,
    roles: &'static [CallerRole],
) -> Rule {
    Rule {
        service,
        method,
        access: Access::Roles(roles),
        while_inactive: false,
        targeted: false,
        counts_agents: false,
    }
}

const fn public(service: &'static str, method: &'static str) -> Rule {
    Rule {
        service,
        method,
        access: Access::Public,
        while_inactive: true,
        targeted: false,
        counts_agents: false,
    }
}

const fn status_read(
    service: &'static str,
    method: &'static str,
    roles: &'static [CallerRole],
) -> Rule {
    Rule {
        service,
        method,
        access: Access::Roles(roles),
        while_inactive: true,
        targeted: true,
        counts_agents: false,
    }
}

/// The policy table.
pub static POLICY: &[Rule] = &[
    // OrganizationService
    on(ORG, "CreateOrganization", MANAGER),
    // Its answer shows the agent count: read with the caller's home organization.
    Rule {
        counts_agents: true,
        ..status_read(ORG, "GetOrganization", READ)
    },
    untargeted(ORG, "ListOrganizations", READ),
    on(ORG, "UpdateOrganization", ADMIN),
    on(ORG, "DeleteOrganization", OPERATOR),
    untargeted(ORG, "CheckSlugAvailability", ANYONE),
    untargeted(ORG, "CheckOrganizationName", ANYONE),
    on(ORG, "SetOrganizationActive", MANAGER),
    on(ORG, "ToggleOrganizationActive", MANAGER),
    on(ORG, "DeactivateOrganization", MANAGER),
    on(ORG, "ReactivateOrganization", MANAGER),
    on(ORG, "RegenerateApiKey", ADMIN),
    on(ORG, "GetOrganizationProfile", READ_USERS),
    on(ORG, "UpdateOrganizationProfile", ADMIN),
    on(ORG, "UpdateOwnerProfile", ADMIN),
    on(ORG, "ListAddresses", READ_USERS),
    on(ORG, "CreateAddress", ADMIN),
    on(ORG, "UpdateAddress", ADMIN),
    on(ORG, "DeleteAddress", ADMIN),
    on(ORG, "RegisterAgent", ADMIN),
    on(ORG, "GetAgent", READ),
    on(ORG, "ListAgents", READ),
    on(ORG, "UpdateAgent", ADMIN),
    on(ORG, "AssignAgent", MANAGER),
    on(ORG, "UnassignAgent", MANAGER),
    on(ORG, "ListAgentAssignments", READ),
    on(ORG, "InviteMember", ADMIN),
    untargeted(ORG, "AcceptInvitation", USERS),
    on(ORG, "ListInvitations", ADMIN),
    on(ORG, "RevokeInvitation", ADMIN),
    on(ORG, "ListMembers", READ_USERS),
    on(ORG, "UpdateMemberRole", ADMIN),
    on(ORG, "RemoveMember", ADMIN),
    on(ORG, "CreatePreApprovedSignup", ADMIN),
    on(ORG, "DeletePreApprovedSignup", ADMIN),
    on(ORG, "ListPreApprovedSignups", ADMIN),
    public(ORG, "ValidateSignup"),
    untargeted(ORG, "RegisterOrganization", USERS),
    on(ORG, "SetFeatureFlag", OPERATOR),
    on(ORG, "ClearFeatureFlag", OPERATOR),
    // An inactive organization's admin may still cancel the account, and a retry of a
    // successful cancellation reaches its stored result.
    Rule {
        while_inactive: true,
        ..on(ORG, "CancelAccount", ADMIN)
    },
    on(ORG, "ReactivateAccount", ROOT_ADMIN),
    on(ORG, "ListAuditEvents", ADMIN),
    on(ORG, "CreateWebhookEndpoint", ADMIN),
    on(ORG, "ListWebhookEndpoints", ADMIN),
    on(ORG, "DeleteWebhookEndpoint", ADMIN),
    on(ORG, "WatchEvents", ADMIN),
    // BillingService
    on(BILLING, "RecordUsage", RECORDERS),
    on(BILLING, "RecordUsageBatch", RECORDERS),
    on(BILLING, "StreamUsage", RECORDERS),
    on(BILLING, "ListBillingRecords", READ),
    on(BILLING, "GetBillingSummary", READ),
    on(BILLING, "GetUsage", READ),
    on(BILLING, "SetSpendLimit", ADMIN),
    on(BILLING, "GetSpendStatus", READ),
    on(BILLING, "GetBalance", READ),
    on(BILLING, "ListTransactions", READ),
    on(BILLING, "GetTransaction", READ),
    on(BILLING, "GiftCredits", ROOT_ADMIN),
    on(BILLING, "AddCredit", ROOT_ADMIN),
    on(BILLING, "BuyCredits", ADMIN),
    on(BILLING, "CompletePayment", ADMIN),
    on(BILLING, "ConfirmManualPayment", OPERATOR),
    on(BILLING, "ListInvoices", READ),
    on(BILLING, "GetInvoice", READ),
    on(BILLING, "GetInvoicePdf", READ),
    on(BILLING, "CreateInvoice", MANAGER),
    on(BILLING, "PayInvoice", ADMIN),
    on(BILLING, "VoidInvoice", OPERATOR),
    on(BILLING, "MarkInvoiceUncollectible", OPERATOR),
    on(BILLING, "GetTenantAnalytics", READ_USERS),
    on(BILLING, "GetAgencyAnalytics", MANAGER),
    // SubscriptionService
    public(SUBSCRIPTION, "ListPlans"),
    public(SUBSCRIPTION, "GetPlan"),
    on(SUBSCRIPTION, "GetSubscription", READ),
    on(SUBSCRIPTION, "CreateSubscription", ADMIN),
    on(SUBSCRIPTION, "PreviewPlanChange", ADMIN),
    on(SUBSCRIPTION, "ChangePlan", ADMIN),
    on(SUBSCRIPTION, "CancelSubscription", ADMIN),
    on(SUBSCRIPTION, "ResumeSubscription", ADMIN),
    on(SUBSCRIPTION, "AdminUpdateSubscription", OPERATOR),
    on(SUBSCRIPTION, "RunBillingCycle", OPERATOR),
    untargeted(SUBSCRIPTION, "ListAddonServices", ANYONE),
    on(SUBSCRIPTION, "GetServicePricing", READ_USERS),
    on(SUBSCRIPTION, "PurchaseService", ADMIN),
    on(SUBSCRIPTION, "CompleteServicePurchase", ADMIN),
    on(SUBSCRIPTION, "ListPurchasedServices", READ_USERS),
    on(SUBSCRIPTION, "GetAgreement", READ_USERS),
    on(SUBSCRIPTION, "AcceptAgreement", ADMIN),
    on(SUBSCRIPTION, "ListAgreements", READ_USERS),
    on(SUBSCRIPTION, "RevokeAgreement", ADMIN),
    // TenantTransferService
    on(TRANSFER, "TransferOwnership", ADMIN),
    on(TRANSFER, "ChangeOwnerEmail", ADMIN),
    on(TRANSFER, "TransferAssets", MANAGER),
    on(TRANSFER, "TransferAssetsBulk", MANAGER),
    on(TRANSFER, "RegisterAsset", OPERATOR),
    on(TRANSFER, "ListAssets", READ),
    on(TRANSFER, "DeregisterAsset", OPERATOR),
    on(TRANSFER, "RequestTenantTransfer", ADMIN),
    on(TRANSFER, "AcceptTenantTransfer", MANAGER),
    on(TRANSFER, "RejectTenantTransfer", MANAGER),
    on(TRANSFER, "CancelTenantTransfer", ADMIN),
    on(TRANSFER, "GetTenantTransfer", ADMIN),
    on(TRANSFER, "ListTenantTransfers", ADMIN),
];

/// The row for a gRPC path `/package.Service/Method`.
pub fn rule_for_path(path: &str) -> Option<&'static Rule> {
    super::method::Method::lookup(path).map(super::method::Method::rule)
}

/// How `principal` relates to `org`, or `None` when outside its scope.
pub fn relation(principal: &Principal, org: &organizations::Model) -> Option<Relation> {
    if principal.role.is_operator() {
        return Some(Relation::Operator);
    }
    let home = principal.org.as_ref()?;
    if home.id == org.id {
        return match principal.role {
            CallerRole::User => None,
            _ => Some(Relation::Own),
        };
    }
    (principal.role == CallerRole::AgencyAdmin && org.parent_id == Some(home.id))
        .then_some(Relation::Child)
}

/// Whether a principal's own organization lets it make this call.
pub fn home_allows(principal: &Principal, rule: &Rule) -> bool {
    if rule.while_inactive || !principal.role.is_org_bound() {
        return true;
    }
    principal
        .org
        .as_ref()
        .is_none_or(|home| home.status == OrgStatus::Active)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique() {
        for (i, a) in POLICY.iter().enumerate() {
            for b in &POLICY[i + 1..] {
                assert!(
                    !(a.service == b.service && a.method == b.method),
                    "{} twice",
                    a.method
                );
            }
        }
    }

    #[test]
    fn finds_rows_by_path() {
        let rule = rule_for_path("/tenantry.v1.OrganizationService/GetOrganization").unwrap();
        assert!(rule.admits(CallerRole::Member));
        assert!(rule_for_path("/tenantry.v1.OrganizationService/Nope").is_none());
        assert!(rule_for_path("garbage").is_none());
    }

    #[test]
    fn only_get_organization_counts_agents() {
        let counting: Vec<_> = POLICY
            .iter()
            .filter(|rule| rule.counts_agents)
            .map(|rule| rule.method)
            .collect();
        assert_eq!(counting, ["GetOrganization"]);
    }
}
