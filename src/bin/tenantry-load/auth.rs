//! The `auth` figure: what authentication costs per call next to a whole Get.
//!
//! Method: in this process, the server's own [`Authenticator`] (same secret, a pool on
//! the same database) admits a member's JWT for GetOrganization `samples` times, one
//! after the other; that is JWT verification, the policy row, the role gate and the
//! read of the caller's home organization, i.e. everything the auth layer does for a
//! call. The same member then makes `samples` GetOrganization calls to the server, one
//! after the other. The figure is the ratio of the mean times. A second, DB-free
//! figure times only the JWT verification and the policy lookup.

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use http::{HeaderMap, HeaderValue};
use tenantry::{
    auth::{jwt::Verifier, layer::Authenticator, method::Method, policy::CallerRole},
    domain::clock::SystemClock,
    proto::{self, organization_service_client::OrganizationServiceClient},
    storage::Store,
};
use tonic::transport::Channel;

use crate::setup::{Fixture, authed};

const GET_PATH: &str = "/tenantry.v1.OrganizationService/GetOrganization";

/// Mean times in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthFigure {
    /// Samples of each.
    pub samples: u32,
    /// One `Authenticator::admit` with a JWT (verify, policy, home organization read).
    pub admit_jwt_us: f64,
    /// One `Authenticator::admit` with an API key (hash, key and organization reads).
    pub admit_api_key_us: f64,
    /// JWT verification and the policy lookup alone (no database).
    pub verify_us: f64,
    /// One GetOrganization round trip with the same JWT.
    pub get_us: f64,
}

impl AuthFigure {
    /// The whole auth layer's time over a Get's (admit with a JWT / Get).
    pub fn ratio(&self) -> f64 {
        self.of_get(self.admit_jwt_us)
    }

    /// JWT verification and policy lookup over a Get.
    pub fn verify_ratio(&self) -> f64 {
        self.of_get(self.verify_us)
    }

    fn of_get(&self, us: f64) -> f64 {
        if self.get_us > 0.0 {
            us / self.get_us
        } else {
            0.0
        }
    }
}

fn bearer(credential: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {credential}"))?,
    );
    Ok(headers)
}

async fn mean_admit(
    auth: &Authenticator,
    headers: &HeaderMap,
    samples: u32,
) -> anyhow::Result<f64> {
    let peer = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    for _ in 0..samples / 10 {
        auth.admit(GET_PATH, headers, peer).await?;
    }
    let started = Instant::now();
    for _ in 0..samples {
        auth.admit(GET_PATH, headers, peer)
            .await?
            .context("GetOrganization is a tenantry RPC: admit names a caller")?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(samples))
}

/// Measures the figure against the server on `channel` whose database is `database_url`.
pub async fn measure(
    channel: Channel,
    database_url: &str,
    secret: &[u8],
    fixture: &Fixture,
    samples: u32,
) -> anyhow::Result<AuthFigure> {
    let samples = samples.max(10);
    let store = Store::connect(database_url, 2, Arc::new(SystemClock)).await?;
    let verifier = Verifier::new(
        "tenantry".into(),
        "tenantry".into(),
        Some(secret),
        Vec::new(),
    );
    let auth = Authenticator::new(verifier.clone(), store.clone(), 60);
    let admit_jwt_us = mean_admit(&auth, &bearer(&fixture.member)?, samples).await?;
    let admit_api_key_us = mean_admit(&auth, &bearer(&fixture.api_key)?, samples).await?;

    let started = Instant::now();
    for _ in 0..samples {
        let claims = verifier
            .verify(&fixture.member)
            .map_err(anyhow::Error::msg)?;
        let rule = Method::lookup(GET_PATH)
            .context("GetOrganization in the policy table")?
            .rule();
        let role = claims.roles.iter().find_map(|r| CallerRole::from_token(r));
        anyhow::ensure!(role.is_some_and(|r| rule.admits(r)), "a member may read");
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(samples);
    store.close().await;

    let mut client = OrganizationServiceClient::new(channel);
    let get = || proto::GetOrganizationRequest {
        organization_id: fixture.read_org.clone(),
    };
    for _ in 0..samples / 10 {
        client
            .get_organization(authed(get(), &fixture.member))
            .await?;
    }
    let started = Instant::now();
    for _ in 0..samples {
        client
            .get_organization(authed(get(), &fixture.member))
            .await?;
    }
    let get_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(samples);
    Ok(AuthFigure {
        samples,
        admit_jwt_us,
        admit_api_key_us,
        verify_us,
        get_us,
    })
}
