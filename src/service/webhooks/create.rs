//! CreateWebhookEndpoint: validates the URL and the event filter, keeps an
//! organization under its endpoint limit and mints the signing secret.

use rand::RngCore;
use reqwest::Url;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use serde_json::json;
use tonic::Code;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind, new_id},
        text,
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    service::{
        audit, audit_request_id, commit, idempotency_key, orgs::lock_live, replayed, settle,
    },
    storage::{audit::AuditRecord, entities::webhook_endpoints},
};

use super::{MAX_ENDPOINTS, endpoint_message};

/// Longest endpoint URL.
const MAX_URL_LEN: usize = 2048;
/// Longest description.
const MAX_DESCRIPTION_LEN: usize = 500;
/// Prefix of signing secrets.
const SECRET_PREFIX: &str = "whsec_";

/// CreateWebhookEndpoint: registers an HTTPS endpoint (plain HTTP only to a loopback
/// host) for the organization's events, optionally filtered by type. The signing secret
/// is returned in this response only; a retry with the same `request_id` returns the
/// same endpoint and secret.
pub async fn create_endpoint(
    ctx: Ctx,
    caller: Caller,
    req: proto::CreateWebhookEndpointRequest,
) -> Result<proto::CreateWebhookEndpointResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let endpoint = req.endpoint.clone().unwrap_or_default();
    let mut v = Violations::new();
    let url = v.check("endpoint.url", parse_url(&endpoint.url));
    let event_types = event_filter(&mut v, &endpoint.event_types);
    let description = v
        .check(
            "endpoint.description",
            text::bounded(endpoint.description.trim(), MAX_DESCRIPTION_LEN).map(str::to_owned),
        )
        .unwrap_or_default();
    v.finish()?;
    let Some(url) = url else {
        return Err(Error::Internal("validated fields missing".into()));
    };
    let key = idempotency_key(&principal, "CreateWebhookEndpoint", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        // The organization's row lock makes concurrent creations count one at a time.
        let org = lock_live(&tx, access.org()).await?;
        let existing = webhook_endpoints::Entity::find()
            .filter(webhook_endpoints::Column::OrganizationId.eq(org.id))
            .count(&*tx)
            .await?;
        if existing >= MAX_ENDPOINTS {
            return Err(Error::rejected(
                Code::ResourceExhausted,
                "WEBHOOK_ENDPOINT_LIMIT",
                format!("an organization may have at most {MAX_ENDPOINTS} webhook endpoints"),
            )
            .with("limit", MAX_ENDPOINTS)
            .with("current", existing));
        }
        let now = ctx.store.now();
        let id = new_id();
        let secret = new_secret();
        let row = webhook_endpoints::ActiveModel {
            id: Set(id),
            organization_id: Set(org.id),
            url: Set(url.clone()),
            event_types: Set(json!(event_types).to_string()),
            description: Set(description.clone()),
            secret: Set(secret.clone()),
            created_by: Set(principal.actor_id().chars().take(256).collect()),
            include_tenants: Set(access.sees_tenants()),
            create_time: Set(now),
            version: Set(1),
        }
        .insert(&*tx)
        .await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "CreateWebhookEndpoint",
                target_type: "webhook_endpoint",
                target_id: ids::encode(IdKind::WebhookEndpoint, id),
                request_id: audit_request_id(&caller, key.as_ref()),
                summary: json!({
                    "url": url, "event_types": event_types, "description": description,
                }),
            },
        )
        .await?;
        let response = proto::CreateWebhookEndpointResponse {
            endpoint: Some(endpoint_message(&row)),
            secret,
        };
        // The secret is kept with the response: it is stored in the endpoint row
        // anyway (it signs every delivery), and a retry must be able to learn it.
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// Checks an endpoint URL: absolute `https://`, or `http://` to a loopback host (for
/// local receivers); no credentials; at most 2048 characters.
fn parse_url(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(text).map_err(|_| "must be an absolute https:// URL".to_owned())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(
                "must use https:// (plain http:// is allowed only to 127.0.0.1, [::1] or localhost)"
                    .into(),
            );
        }
        _ => return Err("must be an absolute https:// URL".into()),
    }
    // Stored as given (trimmed), not re-serialized, so clients see their own URL.
    Ok(text.to_owned())
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Checks the event filter: known types, duplicates dropped, order kept.
fn event_filter(v: &mut Violations, given: &[String]) -> Vec<String> {
    let mut types_wanted: Vec<String> = Vec::new();
    for (i, name) in given.iter().enumerate() {
        let name = name.trim();
        if !types::is_known(name) {
            v.add(
                format!("endpoint.event_types[{i}]"),
                format!("unknown event type {name:?}"),
            );
        } else if !types_wanted.iter().any(|t| t == name) {
            types_wanted.push(name.to_owned());
        }
    }
    types_wanted
}

/// A fresh signing secret: `whsec_` and 32 random bytes in hex.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(parse_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(parse_url("http://[::1]:8080/hook").is_ok());
        assert!(parse_url("http://LOCALHOST/hook").is_ok());
        assert!(parse_url("http://hooks.example.com/x").is_err());
        assert!(parse_url("http://127.0.0.1.example.com/x").is_err());
        assert!(parse_url("ftp://hooks.example.com/x").is_err());
        assert!(parse_url("https://user:pw@hooks.example.com/").is_err());
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("").is_err());
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(parse_url(&long).is_err());
    }

    #[test]
    fn secrets_are_prefixed_and_random() {
        let a = new_secret();
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + 64);
        assert_ne!(a, new_secret());
    }
}
