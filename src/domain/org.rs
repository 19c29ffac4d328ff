//! Organization-level enumerations and their stored names.

use std::str::FromStr;

macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// The stored (and token) name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use stored_enum;

stored_enum! {
    /// Place of an organization in the tree.
    OrgKind { Root => "ROOT", Agency => "AGENCY", Tenant => "TENANT" }
}

stored_enum! {
    /// Lifecycle status of an organization.
    OrgStatus { Active => "ACTIVE", Inactive => "INACTIVE", Cancelled => "CANCELLED" }
}

stored_enum! {
    /// Status of an agent.
    AgentStatus { Active => "ACTIVE", Suspended => "SUSPENDED" }
}

stored_enum! {
    /// What happens at 100 % of the spend limit.
    SpendAction { NotifyOnly => "NOTIFY_ONLY", SuspendUsage => "SUSPEND_USAGE" }
}

stored_enum! {
    /// Role of a member within its organization (ordered by power).
    MemberRole {
        Member => "MEMBER",
        ConfigAdmin => "CONFIG_ADMIN",
        AgencyAdmin => "AGENCY_ADMIN",
        RootPowerUser => "ROOT_POWER_USER",
        RootAdmin => "ROOT_ADMIN",
    }
}

stored_enum! {
    /// State of an invitation.
    InvitationStatus { Pending => "PENDING", Accepted => "ACCEPTED", Revoked => "REVOKED", Expired => "EXPIRED" }
}

stored_enum! {
    /// Kind of an address book entry.
    AddressKind { Billing => "BILLING", Shipping => "SHIPPING", Mailing => "MAILING" }
}

impl MemberRole {
    /// Whether this role may exist in an organization of `kind`.
    pub fn fits(self, kind: OrgKind) -> bool {
        match self {
            MemberRole::Member | MemberRole::ConfigAdmin => true,
            MemberRole::AgencyAdmin => kind == OrgKind::Agency,
            MemberRole::RootPowerUser | MemberRole::RootAdmin => kind == OrgKind::Root,
        }
    }
}
