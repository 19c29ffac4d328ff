//! The data the scenarios run against, created through the API before any timing:
//! a tenant to read (with agents, a member token and an API key), enough tenants to
//! fill a page of 50, and one tenant with agents per usage caller.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use tenantry::{
    auth::jwt::{MintClaims, mint},
    proto::{self, organization_service_client::OrganizationServiceClient},
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// Tenants created in all, so a ListOrganizations page of 50 is full.
const TENANTS_FOR_LISTING: usize = 60;
/// Setup calls in flight at once.
const SETUP_PARALLELISM: usize = 8;

/// `message` with `authorization: Bearer <credential>` (a JWT or an API key).
pub fn authed<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {credential}").parse::<MetadataValue<_>>() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// An HS256 token for `role` in organization `org` (id or slug), valid for a day.
pub fn token(secret: &[u8], role: &str, org: &str) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    mint(
        secret,
        &MintClaims {
            sub: format!("load-{}", role.to_lowercase()),
            org: org.into(),
            roles: vec![role.into()],
            iss: "tenantry".into(),
            aud: "tenantry".into(),
            exp: now + 24 * 3600,
            iat: now,
            email: None,
        },
    )
    .map_err(anyhow::Error::msg)
}

/// A tenant that takes usage, with its agents.
#[derive(Debug, Clone)]
pub struct UsageOrg {
    /// Organization id.
    pub id: String,
    /// Agent ids.
    pub agents: Vec<String>,
}

/// Everything the scenarios need.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// ROOT_ADMIN of the root organization.
    pub root: String,
    /// SYSTEM token (records usage).
    pub system: String,
    /// The tenant read by the Get scenarios.
    pub read_org: String,
    /// A MEMBER of `read_org`.
    pub member: String,
    /// An API key of `read_org`.
    pub api_key: String,
    /// One tenant per usage caller slot.
    pub usage_orgs: Vec<UsageOrg>,
}

/// CreateOrganization of an enterprise-plan tenant named `name` as `root`; its id.
pub async fn create_tenant(channel: Channel, root: String, name: String) -> anyhow::Result<String> {
    let request = proto::CreateOrganizationRequest {
        organization: Some(proto::Organization {
            name,
            kind: proto::OrganizationKind::Tenant as i32,
            // No plan limit on agents: the usage tenants have several.
            plan: "enterprise".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let org = OrganizationServiceClient::new(channel)
        .create_organization(authed(request, &root))
        .await?
        .into_inner()
        .organization
        .context("CreateOrganization answered no organization")?;
    Ok(org.id)
}

async fn register_agent(
    channel: Channel,
    root: String,
    org: String,
    name: String,
) -> anyhow::Result<String> {
    let request = proto::RegisterAgentRequest {
        organization_id: org,
        agent: Some(proto::Agent {
            name,
            ..Default::default()
        }),
        ..Default::default()
    };
    let agent = OrganizationServiceClient::new(channel)
        .register_agent(authed(request, &root))
        .await?
        .into_inner()
        .agent
        .context("RegisterAgent answered no agent")?;
    Ok(agent.id)
}

/// Creates `count` tenants named `<prefix> <n>`, a few at a time.
async fn tenants(
    channel: &Channel,
    root: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    stream::iter(0..count)
        .map(|i| create_tenant(channel.clone(), root.to_owned(), format!("{prefix} {i:03}")))
        .buffered(SETUP_PARALLELISM)
        .try_collect()
        .await
}

/// Registers `count` agents in `org`, a few at a time.
async fn agents(
    channel: &Channel,
    root: &str,
    org: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    stream::iter(0..count)
        .map(|i| {
            let name = format!("Load Agent {i:03}");
            register_agent(channel.clone(), root.to_owned(), org.to_owned(), name)
        })
        .buffered(SETUP_PARALLELISM)
        .try_collect()
        .await
}

/// Creates the fixture: the read tenant, `usage_orgs` usage tenants with `agents`
/// agents each, and filler tenants up to [`TENANTS_FOR_LISTING`].
pub async fn create(
    channel: &Channel,
    secret: &[u8],
    usage_orgs: usize,
    agents_per_org: usize,
) -> anyhow::Result<Fixture> {
    let root = token(secret, "ROOT_ADMIN", "internal")?;
    let read_org = create_tenant(channel.clone(), root.clone(), "Load Read".into()).await?;
    agents(channel, &root, &read_org, 3).await?;
    let api_key = OrganizationServiceClient::new(channel.clone())
        .regenerate_api_key(authed(
            proto::RegenerateApiKeyRequest {
                organization_id: read_org.clone(),
            },
            &root,
        ))
        .await?
        .into_inner()
        .api_key;
    let mut usage = Vec::with_capacity(usage_orgs);
    for id in tenants(channel, &root, "Load Usage", usage_orgs).await? {
        let agents = agents(channel, &root, &id, agents_per_org.max(1)).await?;
        usage.push(UsageOrg { id, agents });
    }
    let filler = TENANTS_FOR_LISTING.saturating_sub(1 + usage_orgs);
    tenants(channel, &root, "Load Filler", filler).await?;
    Ok(Fixture {
        member: token(secret, "MEMBER", &read_org)?,
        system: token(secret, "SYSTEM", "internal")?,
        root,
        read_org,
        api_key,
        usage_orgs: usage,
    })
}

/// Tenantry's answers to the read scenarios' calls, for the baseline to replay.
pub async fn read_answers(
    channel: &Channel,
    fixture: &Fixture,
) -> anyhow::Result<(
    proto::GetOrganizationResponse,
    proto::ListOrganizationsResponse,
)> {
    let mut orgs = OrganizationServiceClient::new(channel.clone());
    let get = proto::GetOrganizationRequest {
        organization_id: fixture.read_org.clone(),
    };
    let get = orgs
        .get_organization(authed(get, &fixture.member))
        .await?
        .into_inner();
    let list = proto::ListOrganizationsRequest {
        page_size: 50,
        ..Default::default()
    };
    let list = orgs
        .list_organizations(authed(list, &fixture.root))
        .await?
        .into_inner();
    Ok((get, list))
}
