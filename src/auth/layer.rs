//! The tower layer that authenticates calls and applies the policy table's role gate.
//!
//! Once the caller is known it is recorded in the current (`rpc`) span as
//! `tenantry.caller` (the role, or `ANONYMOUS`) and `tenantry.org` (the home
//! organization's TypeID), never with its credentials.
//!
//! Calls without credentials to the public RPCs share a budget per client network (see
//! [`client_network`]): the TCP peer's address, never a header such as
//! `X-Forwarded-For`, which any client could forge to escape its budget. Calls with
//! credentials are never counted against it.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use tonic::{Code, Status, transport::server::TcpConnectInfo};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

use crate::{
    auth::method::Method,
    auth::{
        Actor, Caller, HomeOrg, OrgRef, OrgRow, Principal, api_key, find_key_org, find_org_row,
        jwt::Verifier,
        org_inactive,
        policy::{self, Access, CallerRole},
    },
    domain::{
        ids::{self, IdKind},
        org::{OrgKind, OrgStatus},
    },
    error::Error,
    storage::Store,
};

/// Package prefix of the paths this layer guards.
const GUARDED_PREFIX: &str = "/tenantry.v1.";

/// Authenticates callers; shared by every connection.
pub struct Authenticator {
    verifier: Verifier,
    store: Store,
    public_limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `store` that admits at most `public_per_minute`
    /// unauthenticated calls per minute from one client address.
    pub fn new(verifier: Verifier, store: Store, public_per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(public_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Authenticator {
            verifier,
            store,
            public_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Forgets the budgets of client networks that have not called for a while (they
    /// are full again), so that the limiter's memory follows the recent callers only.
    pub fn forget_idle_callers(&self) {
        self.public_limiter.retain_recent();
        self.public_limiter.shrink_to_fit();
    }

    /// Decides whether a call to `path` may proceed: `Ok(None)` for paths outside
    /// `tenantry.v1` (health, reflection), `Ok(Some(caller))` when admitted.
    pub async fn admit(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Option<Caller>, Status> {
        if !path.starts_with(GUARDED_PREFIX) {
            return Ok(None);
        }
        let Some(rule) = Method::lookup(path).map(Method::rule) else {
            return Err(Status::unimplemented(format!("unknown method {path}")));
        };
        let trace_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let credential = credential(headers).map_err(Status::from)?;
        let principal = match credential {
            None if rule.access == Access::Public => {
                Span::current().record("tenantry.caller", "ANONYMOUS");
                let key = client_network(peer);
                if self.public_limiter.check_key(&key).is_err() {
                    return Err(Error::rejected(
                        Code::ResourceExhausted,
                        "RATE_LIMITED",
                        "too many unauthenticated calls from this address; retry in a minute",
                    )
                    .into());
                }
                return Ok(Some(Caller {
                    rule,
                    principal: None,
                    trace_id,
                }));
            }
            None => {
                return Err(Error::Unauthenticated(
                    "credentials required: `authorization: Bearer <token or API key>` or `x-api-key`".into(),
                )
                .into());
            }
            Some(Credential::ApiKey(key)) => {
                self.api_key_principal(&key, rule.counts_agents).await?
            }
            Some(Credential::Token(token)) => {
                self.token_principal(&token, rule.counts_agents).await?
            }
        };
        record_caller(&principal);
        if !rule.admits(principal.role) {
            return Err(Error::PermissionDenied(format!(
                "{} may not call {}",
                principal.role.as_str(),
                rule.method
            ))
            .into());
        }
        if !policy::home_allows(&principal, rule) {
            return Err(org_inactive().into());
        }
        Ok(Some(Caller {
            rule,
            principal: Some(Arc::new(principal)),
            trace_id,
        }))
    }

    async fn api_key_principal(&self, key: &str, count_agents: bool) -> Result<Principal, Status> {
        // The key and its organization in one query: a revoked key, or one whose
        // organization is deleted, finds nothing.
        let found = find_key_org(&self.store, &api_key::hash(key), count_agents)
            .await
            .map_err(Status::from)?
            .ok_or_else(|| Status::from(Error::Unauthenticated("invalid API key".into())))?;
        Ok(Principal {
            role: CallerRole::ApiKey,
            org: Some(home(found.org)),
            actor: Actor::ApiKey {
                key_id: found.key_id,
                prefix: found.prefix,
            },
        })
    }

    async fn token_principal(&self, token: &str, count_agents: bool) -> Result<Principal, Status> {
        let claims = self
            .verifier
            .verify(token)
            .map_err(|reason| Status::from(Error::Unauthenticated(reason)))?;
        let role = claims
            .roles
            .iter()
            .filter_map(|name| CallerRole::from_token(name))
            .max()
            .unwrap_or(CallerRole::User);
        let org = match claims.org.as_deref().filter(|o| !o.is_empty()) {
            Some(reference) => {
                let unknown = || {
                    Status::from(Error::Unauthenticated(
                        "the token's organization does not exist".into(),
                    ))
                };
                let parsed = OrgRef::parse(reference).ok_or_else(unknown)?;
                let row = find_org_row(&self.store, &parsed, count_agents)
                    .await
                    .map_err(Status::from)?
                    .ok_or_else(unknown)?;
                Some(home(row))
            }
            None => None,
        };
        let needs_org = !matches!(role, CallerRole::User | CallerRole::System);
        if needs_org && org.is_none() {
            return Err(Error::Unauthenticated(format!(
                "role {} requires an `org` claim",
                role.as_str()
            ))
            .into());
        }
        if let Some(home) = &org {
            let fits = match role {
                CallerRole::RootAdmin | CallerRole::RootPowerUser => home.kind == OrgKind::Root,
                CallerRole::AgencyAdmin => home.kind == OrgKind::Agency,
                _ => true,
            };
            if !fits {
                return Err(Error::Unauthenticated(format!(
                    "role {} is not valid in a {} organization",
                    role.as_str(),
                    home.kind
                ))
                .into());
            }
        }
        let actor = if role == CallerRole::System {
            Actor::System { sub: claims.sub }
        } else {
            Actor::User {
                sub: claims.sub,
                email: claims.email,
            }
        };
        Ok(Principal { role, org, actor })
    }
}

/// The rate-limit key of a peer: its IPv4 address (also when written IPv4-mapped), or
/// the /64 network of an IPv6 address, since one host commonly holds a whole /64.
/// Calls whose peer is unknown share one key.
pub fn client_network(peer: Option<IpAddr>) -> IpAddr {
    match peer.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        Some(v4) => v4,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Records who calls in the current span (the `rpc` span of the call).
fn record_caller(principal: &Principal) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("tenantry.caller", principal.role.as_str());
    if let Some(home) = &principal.org {
        span.record("tenantry.org", tracing::field::display(OrgTypeId(home.id)));
    }
}

/// An organization's TypeID, encoded only if a subscriber formats it.
struct OrgTypeId(uuid::Uuid);

impl fmt::Display for OrgTypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ids::encode(IdKind::Organization, self.0))
    }
}

fn home(org: OrgRow) -> HomeOrg {
    HomeOrg {
        id: org.row.id,
        kind: org.row.kind.parse().unwrap_or(OrgKind::Tenant),
        status: org.row.status.parse().unwrap_or(OrgStatus::Inactive),
        row: org.row,
        agent_count: org.agent_count,
    }
}

enum Credential {
    Token(String),
    ApiKey(String),
}

fn credential(headers: &HeaderMap) -> Result<Option<Credential>, Error> {
    let bad = || Error::Unauthenticated("malformed credentials".into());
    let value = if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
        let text = auth.to_str().map_err(|_| bad())?;
        let (scheme, rest) = text.split_once(' ').ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthenticated(
                "use `authorization: Bearer …`".into(),
            ));
        }
        rest.trim().to_owned()
    } else if let Some(key) = headers.get("x-api-key") {
        key.to_str().map_err(|_| bad())?.trim().to_owned()
    } else {
        return Ok(None);
    };
    if value.is_empty() {
        return Err(bad());
    }
    Ok(Some(if value.starts_with(api_key::PREFIX) {
        Credential::ApiKey(value)
    } else {
        Credential::Token(value)
    }))
}

/// Tower layer installing [`AuthService`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer using `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// Authenticates each call, then forwards it with the [`Caller`] in its extensions.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|addr| addr.ip());
            match auth
                .admit(request.uri().path(), request.headers(), peer)
                .await
            {
                Ok(Some(caller)) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Ok(None) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn callers_are_keyed_by_address_or_ipv6_network() {
        assert_eq!(client_network(Some(ip("203.0.113.7"))), ip("203.0.113.7"));
        assert_eq!(
            client_network(Some(ip("::ffff:203.0.113.7"))),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_network(Some(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"))),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_network(Some(ip("2001:db8:1:2::1"))),
            client_network(Some(ip("2001:db8:1:2:ffff::9")))
        );
        assert_ne!(
            client_network(Some(ip("2001:db8:1:2::1"))),
            client_network(Some(ip("2001:db8:1:3::1")))
        );
        assert_eq!(client_network(None), ip("0.0.0.0"));
    }
}
