//! Authentication and authorization.
//!
//! The tower [`layer::AuthLayer`] authenticates every `tenantry.v1` call (JWT or
//! organization API key), looks up the RPC's row in the one [`policy`] table, refuses
//! roles the row does not admit, and puts the [`Caller`] into the request extensions.
//! Handlers then call [`Caller::authorize`] with the organization the request targets;
//! it checks the role's scope (own / child / any) and returns an [`OrgAccess`] proof
//! that domain functions require, so no handler can skip the check.

pub mod api_key;
pub mod jwt;
pub mod layer;
pub mod method;
mod org_rows;
pub mod policy;

use std::sync::Arc;

use tonic::Code;
use uuid::Uuid;

use crate::{
    domain::{
        ids::{self, IdKind},
        org::{OrgKind, OrgStatus},
        slug::Slug,
    },
    error::{Error, Result},
    storage::{Store, entities::organizations},
};
pub use org_rows::{KeyedOrg, OrgRow, find_key_org, find_org, find_org_row, live_orgs};
pub use policy::{CallerRole, Rule};

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user with a JWT.
    User {
        /// JWT subject.
        sub: String,
        /// Email claim, when present.
        email: Option<String>,
    },
    /// A trusted internal service (JWT with role SYSTEM).
    System {
        /// JWT subject.
        sub: String,
    },
    /// An organization API key.
    ApiKey {
        /// Key row id.
        key_id: Uuid,
        /// Non-secret prefix.
        prefix: String,
    },
}

/// The organization a principal belongs to, as loaded for this call.
#[derive(Debug, Clone)]
pub struct HomeOrg {
    /// Id.
    pub id: Uuid,
    /// Kind.
    pub kind: OrgKind,
    /// Status at the time of the call.
    pub status: OrgStatus,
    /// The row as read for this call, reused when the call targets the caller's own
    /// organization so it is not read twice.
    pub row: organizations::Model,
    /// Its agent count, read with the row for the RPCs that show it (see
    /// [`policy::Rule::counts_agents`]); `None` for the others.
    pub agent_count: Option<u64>,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The role the policy table is consulted with.
    pub role: CallerRole,
    /// The caller's organization; `None` for a user without one (before signup).
    pub org: Option<HomeOrg>,
    /// Who it is.
    pub actor: Actor,
}

impl Principal {
    /// Kind of actor as stored in audit entries.
    pub fn actor_kind(&self) -> &'static str {
        match self.actor {
            Actor::User { .. } => "USER",
            Actor::System { .. } => "SYSTEM",
            Actor::ApiKey { .. } => "API_KEY",
        }
    }

    /// Actor id as stored in audit entries: subject or key prefix.
    pub fn actor_id(&self) -> &str {
        match &self.actor {
            Actor::User { sub, .. } | Actor::System { sub } => sub,
            Actor::ApiKey { prefix, .. } => prefix,
        }
    }

    /// Scope of idempotency keys: one namespace per principal.
    pub fn idempotency_scope(&self) -> String {
        match &self.actor {
            Actor::User { sub, .. } => format!("user:{sub}"),
            Actor::System { sub } => format!("system:{sub}"),
            Actor::ApiKey { .. } => format!(
                "key:{}",
                self.org.as_ref().map(|o| o.id).unwrap_or_default()
            ),
        }
    }

    /// The author recorded on ledger entries: `user:<sub>`, `system:<sub>` or
    /// `api_key:<org id>`.
    pub fn author(&self) -> String {
        match &self.actor {
            Actor::User { sub, .. } => format!("user:{sub}"),
            Actor::System { sub } => format!("system:{sub}"),
            Actor::ApiKey { .. } => format!(
                "api_key:{}",
                self.org
                    .as_ref()
                    .map(|o| crate::domain::ids::encode(
                        crate::domain::ids::IdKind::Organization,
                        o.id
                    ))
                    .unwrap_or_default()
            ),
        }
    }

    /// The caller's organization id, if any.
    pub fn org_id(&self) -> Option<Uuid> {
        self.org.as_ref().map(|o| o.id)
    }
}

/// What the layer hands to handlers: the RPC's policy row and the caller (none for
/// public RPCs called without credentials).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The policy row of the RPC.
    pub rule: &'static Rule,
    /// The authenticated principal.
    pub principal: Option<Arc<Principal>>,
    /// The request id used in audit entries (`x-request-id` or generated).
    pub trace_id: String,
}

/// How the caller relates to an organization it may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The caller's own organization.
    Own,
    /// A tenant of the caller's agency.
    Child,
    /// The caller is an operator (root role or SYSTEM) acting on any organization.
    Operator,
}

/// Proof that the caller may act on `org` under the RPC's policy row.
#[derive(Debug, Clone)]
pub struct OrgAccess {
    org: organizations::Model,
    relation: Relation,
    principal: Arc<Principal>,
    rule: &'static Rule,
}

impl OrgAccess {
    /// The organization, as read during authorization.
    pub fn org(&self) -> &organizations::Model {
        &self.org
    }

    /// How the caller relates to it.
    pub fn relation(&self) -> Relation {
        self.relation
    }

    /// Whether the caller manages the organization from above (operator or its agency),
    /// which billing terms (rates, currency, plan, limits) require.
    pub fn manages(&self) -> bool {
        matches!(self.relation, Relation::Operator | Relation::Child)
    }

    /// Whether the caller reads the tenants of the organization along with it (audit
    /// entries, events): the organization is an agency and the caller its AGENCY_ADMIN
    /// or an operator. An agency's CONFIG_ADMIN acts on the agency alone.
    pub fn sees_tenants(&self) -> bool {
        self.org.kind == OrgKind::Agency.as_str()
            && (self.relation == Relation::Operator
                || self.principal.role == CallerRole::AgencyAdmin)
    }

    /// The caller.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The RPC being served.
    pub fn rule(&self) -> &'static Rule {
        self.rule
    }
}

/// A parsed reference to an organization: its id or its slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgRef {
    /// `org_…`
    Id(Uuid),
    /// A slug.
    Slug(String),
}

impl OrgRef {
    /// Parses an id or slug; `None` when it is neither.
    pub fn parse(text: &str) -> Option<OrgRef> {
        if text.starts_with("org_") {
            ids::decode(IdKind::Organization, text).ok().map(OrgRef::Id)
        } else {
            Slug::parse(text)
                .ok()
                .map(|s| OrgRef::Slug(s.as_str().to_owned()))
        }
    }
}

impl Caller {
    /// The principal; public RPCs called without credentials have none.
    pub fn principal(&self) -> Result<&Arc<Principal>> {
        self.principal
            .as_ref()
            .ok_or_else(|| Error::Unauthenticated("credentials required".into()))
    }

    /// Checks that the caller may act on the organization named by `reference` (an id
    /// or slug, reported under `field`) and returns the proof. A caller whose scope
    /// cannot include the organization gets PERMISSION_DENIED whether or not it
    /// exists; operators get INVALID_ARGUMENT or NOT_FOUND.
    pub async fn authorize(
        &self,
        store: &Store,
        field: &str,
        reference: &str,
    ) -> Result<OrgAccess> {
        let (access, _) = self
            .authorize_reading(store, field, reference, false)
            .await?;
        Ok(access)
    }

    /// Like [`Caller::authorize`], also returning the organization's agent count read
    /// with its row: the caller's own organization's count comes with the home row the
    /// auth layer read, another organization's with the one query that loads it.
    pub async fn authorize_with_agent_count(
        &self,
        store: &Store,
        field: &str,
        reference: &str,
    ) -> Result<(OrgAccess, u64)> {
        let (access, count) = self
            .authorize_reading(store, field, reference, true)
            .await?;
        match count {
            Some(count) => Ok((access, count)),
            // Not reachable: a counted read always carries the count.
            None => Err(Error::Internal(
                "organization read without its agent count".into(),
            )),
        }
    }

    async fn authorize_reading(
        &self,
        store: &Store,
        field: &str,
        reference: &str,
        count_agents: bool,
    ) -> Result<(OrgAccess, Option<u64>)> {
        let principal = self.principal()?.clone();
        let operator = principal.role.is_operator();
        let parsed = OrgRef::parse(reference);
        let Some(parsed) = parsed else {
            return Err(if operator {
                Error::invalid(field, "must be an organization id (org_…) or slug")
            } else {
                denied()
            });
        };
        // The caller's own organization as the layer read it, unless a count is wanted
        // that the layer did not read.
        let own = principal
            .org
            .as_ref()
            .filter(|home| match &parsed {
                OrgRef::Id(id) => *id == home.row.id,
                OrgRef::Slug(slug) => *slug == home.row.slug,
            })
            .filter(|home| !count_agents || home.agent_count.is_some());
        let org = match own {
            Some(home) => Some(OrgRow {
                row: home.row.clone(),
                agent_count: home.agent_count,
            }),
            None => find_org_row(store, &parsed, count_agents).await?,
        };
        let Some(org) = org else {
            return Err(if operator {
                Error::not_found("organization", reference)
            } else {
                denied()
            });
        };
        let access = self.authorize_loaded(principal, org.row)?;
        Ok((access, org.agent_count))
    }

    /// Like [`Caller::authorize`] for an organization already loaded (e.g. an agent's).
    /// A missing organization is reported as `not_found` to operators only.
    pub fn authorize_row(&self, org: organizations::Model) -> Result<OrgAccess> {
        let principal = self.principal()?.clone();
        self.authorize_loaded(principal, org)
    }

    fn authorize_loaded(
        &self,
        principal: Arc<Principal>,
        org: organizations::Model,
    ) -> Result<OrgAccess> {
        let relation = policy::relation(&principal, &org).ok_or_else(denied)?;
        Ok(OrgAccess {
            org,
            relation,
            principal,
            rule: self.rule,
        })
    }

    /// Whether the caller is an operator (root roles or SYSTEM).
    pub fn is_operator(&self) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.role.is_operator())
    }
}

/// The PERMISSION_DENIED for an organization outside the caller's scope.
pub fn denied() -> Error {
    Error::PermissionDenied("the caller may not act on this organization".into())
}

/// FAILED_PRECONDITION for a caller whose own organization is not active.
pub fn org_inactive() -> Error {
    Error::rejected(
        Code::FailedPrecondition,
        "ORG_INACTIVE",
        "the organization is not active; only reading its status is allowed",
    )
}
