//! Token attacks: every forged, stale, misaddressed or malformed credential is refused
//! with UNAUTHENTICATED; tokens signed with the configured HS256 secret, PEM public keys
//! (RS256, ES256, EdDSA) or JWKS keys verify; health and reflection need no token.
//!
//! The key pairs under `tests/fixtures/jwt/` are test-only (see the README there).

use std::path::PathBuf;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tenantry::{
    config::PublicKeySpec,
    domain::ids::{self, IdKind},
    proto,
    storage::entities::{api_keys, organizations},
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::{
    helpers::{Backend, SECRET, TestApp, authed},
    on_both_backends,
};

on_both_backends!(
    forged_stale_and_malformed_tokens_are_unauthenticated,
    tokens_signed_with_configured_keys_verify,
    health_and_reflection_need_no_token,
    api_keys_stop_working_when_rotated_or_their_org_is_deleted,
);

const RSA_KID: &str = "rsa-1";
const EC_KID: &str = "ec-1";
const ED_KID: &str = "ed-1";
const JWKS_RSA_KID: &str = "jwks-rs256";
const JWKS_EC_KID: &str = "jwks-es256";
const JWKS_ED_KID: &str = "jwks-eddsa";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

/// A server trusting the test HS256 secret, three PEM public keys and the JWKS file.
async fn spawn(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |s| {
        let spec = |kid: &str, algorithm: &str, file: &str| PublicKeySpec {
            kid: kid.into(),
            algorithm: algorithm.into(),
            path: fixture(file),
        };
        s.jwt_public_keys = vec![
            spec(RSA_KID, "RS256", "rsa_public.pem"),
            spec(EC_KID, "ES256", "ec_public.pem"),
            spec(ED_KID, "EdDSA", "ed25519_public.pem"),
        ];
        s.jwks_file = Some(fixture("jwks.json"));
    })
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Valid claims for `role` in `org`.
fn claims(role: &str, org: &str) -> Value {
    let now = now();
    json!({
        "sub": "token-test-user",
        "org": org,
        "roles": [role],
        "iss": "tenantry",
        "aud": "tenantry",
        "exp": now + 600,
        "iat": now,
        "email": "token-test@example.com",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("claims object").remove(key);
    claims
}

fn header(algorithm: Algorithm, kid: Option<&str>) -> Header {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    header
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign token")
}

fn hs256(claims: &Value) -> String {
    sign(
        &header(Algorithm::HS256, None),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

fn rsa_key(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_fixture(file)).expect("RSA private key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read_fixture("ec_private.pem")).expect("EC private key")
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&read_fixture("ed25519_private.pem")).expect("Ed25519 private key")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// A token with `alg: none` (or another unsigned header) and an empty or junk signature.
fn unsigned(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(&header), b64(claims))
}

/// `token` with its payload rewritten by `edit` and the original signature kept.
fn tampered(token: &str, edit: impl FnOnce(&str) -> String) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token");
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).expect("payload base64"))
        .expect("payload utf-8");
    let edited = URL_SAFE_NO_PAD.encode(edit(&payload));
    parts[1] = &edited;
    parts.join(".")
}

async fn create_agency(app: &TestApp, name: &str) -> String {
    app.orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: name.into(),
                    kind: proto::OrganizationKind::Agency.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create agency")
        .into_inner()
        .organization
        .expect("organization")
        .id
}

/// GetOrganization of `org` with a raw `authorization` header value (or none).
async fn get_with_header(
    app: &TestApp,
    org: &str,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut request = Request::new(proto::GetOrganizationRequest {
        organization_id: org.into(),
    });
    if let Some(value) = authorization {
        let value: MetadataValue<_> = value.parse().expect("header value");
        request.metadata_mut().insert("authorization", value);
    }
    app.orgs().get_organization(request).await.map(drop)
}

async fn get_with_token(app: &TestApp, org: &str, token: &str) -> Result<(), tonic::Status> {
    get_with_header(app, org, Some(&format!("Bearer {token}"))).await
}

async fn forged_stale_and_malformed_tokens_are_unauthenticated(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let agency = create_agency(&app, "Token Agency").await;
    let member = claims("MEMBER", &agency);
    let now = now();
    let rsa_public_pem = read_fixture("rsa_public.pem");
    let valid = hs256(&member);
    // The baseline: the same request with a good token passes.
    get_with_token(&app, &agency, &valid)
        .await
        .expect("a valid MEMBER token is accepted");

    let attacks: Vec<(&str, String)> = vec![
        (
            "expired beyond the leeway",
            hs256(&with(member.clone(), "exp", json!(now - 120))),
        ),
        (
            "not yet valid beyond the leeway",
            hs256(&with(member.clone(), "nbf", json!(now + 120))),
        ),
        (
            "wrong issuer",
            hs256(&with(member.clone(), "iss", json!("someone-else"))),
        ),
        (
            "wrong audience",
            hs256(&with(member.clone(), "aud", json!("another-service"))),
        ),
        ("missing exp", hs256(&without(member.clone(), "exp"))),
        ("missing iss", hs256(&without(member.clone(), "iss"))),
        ("missing aud", hs256(&without(member.clone(), "aud"))),
        ("missing sub", hs256(&without(member.clone(), "sub"))),
        (
            "wrong HS256 secret",
            sign(
                &header(Algorithm::HS256, None),
                &member,
                &EncodingKey::from_secret(b"not-the-server-secret-at-all!!!!"),
            ),
        ),
        (
            "alg none, empty signature",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &member, ""),
        ),
        (
            "alg none, junk signature",
            unsigned(
                json!({"alg": "none", "typ": "JWT"}),
                &member,
                "c2lnbmF0dXJl",
            ),
        ),
        ("alg None", unsigned(json!({"alg": "None"}), &member, "")),
        (
            "alg none with the RSA kid",
            unsigned(json!({"alg": "none", "kid": RSA_KID}), &member, ""),
        ),
        (
            "HS256 keyed with the RSA public key, no kid",
            sign(
                &header(Algorithm::HS256, None),
                &member,
                &EncodingKey::from_secret(&rsa_public_pem),
            ),
        ),
        (
            "HS256 keyed with the RSA public key, RSA kid",
            sign(
                &header(Algorithm::HS256, Some(RSA_KID)),
                &member,
                &EncodingKey::from_secret(&rsa_public_pem),
            ),
        ),
        (
            "HS256 keyed with the RSA public key, JWKS RSA kid",
            sign(
                &header(Algorithm::HS256, Some(JWKS_RSA_KID)),
                &member,
                &EncodingKey::from_secret(&rsa_public_pem),
            ),
        ),
        (
            "tampered payload: role flipped",
            tampered(&valid, |p| p.replace("\"MEMBER\"", "\"ROOT_ADMIN\"")),
        ),
        (
            "tampered payload: expiry extended",
            tampered(&valid, |p| {
                p.replace(&format!("{}", now + 600), &format!("{}", now + 999_999))
            }),
        ),
        ("tampered header: alg switched to none", {
            let parts: Vec<&str> = valid.split('.').collect();
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                parts[1],
                parts[2]
            )
        }),
        (
            "signed by another RSA key under the configured kid",
            sign(
                &header(Algorithm::RS256, Some(RSA_KID)),
                &member,
                &rsa_key("rsa_other_private.pem"),
            ),
        ),
        (
            "ES256 token under the RSA kid",
            sign(&header(Algorithm::ES256, Some(RSA_KID)), &member, &ec_key()),
        ),
        (
            "EdDSA token under the EC kid",
            sign(&header(Algorithm::EdDSA, Some(EC_KID)), &member, &ed_key()),
        ),
        (
            "RS256 token without kid (only HS256 is kid-less)",
            sign(
                &header(Algorithm::RS256, None),
                &member,
                &rsa_key("rsa_private.pem"),
            ),
        ),
        (
            "unknown kid, HS256",
            sign(
                &header(Algorithm::HS256, Some("nope")),
                &member,
                &EncodingKey::from_secret(SECRET),
            ),
        ),
        (
            "unknown kid, RS256 with the right key",
            sign(
                &header(Algorithm::RS256, Some("nope")),
                &member,
                &rsa_key("rsa_private.pem"),
            ),
        ),
        (
            "ROOT_ADMIN in a non-root org",
            hs256(&claims("ROOT_ADMIN", &agency)),
        ),
        (
            "ROOT_POWER_USER in a non-root org",
            hs256(&claims("ROOT_POWER_USER", &agency)),
        ),
        (
            "AGENCY_ADMIN of the root org",
            hs256(&claims("AGENCY_ADMIN", "internal")),
        ),
        (
            "an org id that does not exist",
            hs256(&claims(
                "MEMBER",
                &ids::encode(IdKind::Organization, uuid::Uuid::now_v7()),
            )),
        ),
        (
            "an org slug that does not exist",
            hs256(&claims("MEMBER", "no-such-org")),
        ),
        (
            "a role that needs an org, without one",
            hs256(&without(claims("CONFIG_ADMIN", &agency), "org")),
        ),
        ("garbage", "garbage".into()),
        ("three empty segments", "..".into()),
        ("dots only", "....".into()),
        ("junk segments", "a.b.c".into()),
        (
            "base64 junk",
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("{"),
                URL_SAFE_NO_PAD.encode("}"),
                "x"
            ),
        ),
        ("a JSON object", "{\"alg\":\"HS256\"}".into()),
        ("a long junk token", "x".repeat(8 * 1024)),
        ("an unknown API key", "ak_this-key-was-never-issued".into()),
    ];

    let mut failures = Vec::new();
    for (name, token) in &attacks {
        match get_with_token(&app, &agency, token).await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            other => failures.push(format!(
                "{name}: {:?}",
                other.map_err(|s| (s.code(), s.message().to_owned()))
            )),
        }
    }
    // Malformed headers.
    let headers = [
        ("empty bearer", "Bearer "),
        ("bearer without a value", "Bearer"),
        ("another scheme", "Basic dXNlcjpwYXNz"),
        ("no scheme", "ak_something"),
    ];
    for (name, value) in headers {
        match get_with_header(&app, &agency, Some(value)).await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            other => failures.push(format!(
                "{name}: {:?}",
                other.map_err(|s| (s.code(), s.message().to_owned()))
            )),
        }
    }
    // No credentials at all, and an unknown key in `x-api-key`.
    match get_with_header(&app, &agency, None).await {
        Err(status) if status.code() == Code::Unauthenticated => {}
        other => failures.push(format!("no credentials: {other:?}")),
    }
    let mut request = Request::new(proto::GetOrganizationRequest {
        organization_id: agency.clone(),
    });
    request.metadata_mut().insert(
        "x-api-key",
        MetadataValue::from_static("ak_this-key-was-never-issued"),
    );
    match app.orgs().get_organization(request).await {
        Err(status) if status.code() == Code::Unauthenticated => {}
        other => failures.push(format!("unknown x-api-key: {:?}", other.map(drop))),
    }
    assert!(
        failures.is_empty(),
        "{} token attacks were not refused with UNAUTHENTICATED:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    app.stop().await;
}

async fn tokens_signed_with_configured_keys_verify(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let agency = create_agency(&app, "Key Agency").await;
    let member = claims("MEMBER", &agency);
    let root = claims("ROOT_ADMIN", "internal");
    let now = now();
    let accepted: Vec<(&str, String, &Value)> = vec![
        ("HS256 with the secret", hs256(&member), &member),
        (
            "RS256 PEM key",
            sign(
                &header(Algorithm::RS256, Some(RSA_KID)),
                &member,
                &rsa_key("rsa_private.pem"),
            ),
            &member,
        ),
        (
            "ES256 PEM key",
            sign(&header(Algorithm::ES256, Some(EC_KID)), &member, &ec_key()),
            &member,
        ),
        (
            "EdDSA PEM key",
            sign(&header(Algorithm::EdDSA, Some(ED_KID)), &member, &ed_key()),
            &member,
        ),
        (
            "RS256 root admin",
            sign(
                &header(Algorithm::RS256, Some(RSA_KID)),
                &root,
                &rsa_key("rsa_private.pem"),
            ),
            &root,
        ),
        (
            "JWKS RSA key (alg from kty)",
            sign(
                &header(Algorithm::RS256, Some(JWKS_RSA_KID)),
                &member,
                &rsa_key("rsa_private.pem"),
            ),
            &member,
        ),
        (
            "JWKS EC key",
            sign(
                &header(Algorithm::ES256, Some(JWKS_EC_KID)),
                &member,
                &ec_key(),
            ),
            &member,
        ),
        (
            "JWKS OKP key (alg from kty)",
            sign(
                &header(Algorithm::EdDSA, Some(JWKS_ED_KID)),
                &member,
                &ed_key(),
            ),
            &member,
        ),
        (
            "expired within the 30 s leeway",
            hs256(&with(member.clone(), "exp", json!(now - 5))),
            &member,
        ),
        (
            "nbf within the 30 s leeway",
            hs256(&with(member.clone(), "nbf", json!(now + 5))),
            &member,
        ),
        (
            "ROLE_-prefixed role name",
            hs256(&with(member.clone(), "roles", json!(["ROLE_MEMBER"]))),
            &member,
        ),
    ];
    let mut failures = Vec::new();
    for (name, token, _) in &accepted {
        if let Err(status) = get_with_token(&app, &agency, token).await {
            failures.push(format!("{name}: {:?} {}", status.code(), status.message()));
        }
    }
    // A JWKS key verifies only its own kid's tokens: the EC key's token under the
    // JWKS EdDSA kid is refused.
    let crossed = sign(
        &header(Algorithm::ES256, Some(JWKS_ED_KID)),
        &member,
        &ec_key(),
    );
    match get_with_token(&app, &agency, &crossed).await {
        Err(status) if status.code() == Code::Unauthenticated => {}
        other => failures.push(format!(
            "ES256 token under the JWKS EdDSA kid: {:?}",
            other.map_err(|s| s.code())
        )),
    }
    // A member of the agency is still confined to it, whatever key signed the token.
    let other = create_agency(&app, "Other Key Agency").await;
    let rs_member = sign(
        &header(Algorithm::RS256, Some(RSA_KID)),
        &member,
        &rsa_key("rsa_private.pem"),
    );
    match get_with_token(&app, &other, &rs_member).await {
        Err(status) if status.code() == Code::PermissionDenied => {}
        other => failures.push(format!(
            "RS256 member on a foreign org: {:?}",
            other.map_err(|s| s.code())
        )),
    }
    assert!(
        failures.is_empty(),
        "valid tokens were refused:\n  {}",
        failures.join("\n  ")
    );
    app.stop().await;
}

async fn health_and_reflection_need_no_token(backend: Backend) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::{v1, v1alpha};

    let Some(app) = spawn(backend).await else {
        return;
    };
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "tenantry.v1.OrganizationService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?} without a token: {e:?}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "health of {service:?}");
    }

    let mut reflection =
        v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1 without a token")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("an answer")
        .expect("reflection v1 answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("unexpected reflection v1 answer: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "tenantry.v1.OrganizationService"),
        "reflection v1 lists {names:?}"
    );

    let mut reflection =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
        ..Default::default()
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha without a token")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("an answer")
        .expect("reflection v1alpha answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("unexpected reflection v1alpha answer: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "tenantry.v1.BillingService"),
        "reflection v1alpha lists {names:?}"
    );

    // A guarded RPC on the same channel still needs credentials.
    let refused = app
        .orgs()
        .list_organizations(proto::ListOrganizationsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.stop().await;
}

/// RegenerateApiKey for `org` as its CONFIG_ADMIN: the new key.
async fn new_api_key(app: &TestApp, org: &str) -> String {
    app.orgs()
        .regenerate_api_key(authed(
            proto::RegenerateApiKeyRequest {
                organization_id: org.into(),
            },
            &app.token("CONFIG_ADMIN", org),
        ))
        .await
        .expect("regenerate API key")
        .into_inner()
        .api_key
}

/// GetOrganization of `org` with `key` in `x-api-key`.
async fn get_with_api_key(app: &TestApp, org: &str, key: &str) -> Result<(), tonic::Status> {
    let mut request = Request::new(proto::GetOrganizationRequest {
        organization_id: org.into(),
    });
    let value: MetadataValue<_> = key.parse().expect("header value");
    request.metadata_mut().insert("x-api-key", value);
    app.orgs().get_organization(request).await.map(drop)
}

fn assert_invalid_key(result: Result<(), tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}");
    assert_eq!(status.message(), "invalid API key", "{what}");
}

/// The key and its organization are found with one join: a rotated key, a key whose
/// organization was deleted, and a key left unrevoked on a deleted organization are
/// all refused.
async fn api_keys_stop_working_when_rotated_or_their_org_is_deleted(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let org = create_agency(&app, "Keyed Agency").await;
    let first = new_api_key(&app, &org).await;
    get_with_api_key(&app, &org, &first)
        .await
        .expect("a fresh key in x-api-key");
    get_with_header(&app, &org, Some(&format!("Bearer {first}")))
        .await
        .expect("a fresh key as a bearer credential");
    let second = new_api_key(&app, &org).await;
    assert_invalid_key(get_with_api_key(&app, &org, &first).await, "rotated key");
    get_with_api_key(&app, &org, &second)
        .await
        .expect("the new key");

    app.orgs()
        .delete_organization(authed(
            proto::DeleteOrganizationRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("delete organization");
    assert_invalid_key(
        get_with_api_key(&app, &org, &second).await,
        "key of a deleted organization",
    );
    // Deleting revokes the keys; a key row left live on a deleted organization is
    // refused all the same.
    let org_id = ids::decode(IdKind::Organization, &org).expect("org id");
    let stored = organizations::Entity::find_by_id(org_id)
        .one(app.store.db())
        .await
        .expect("read organization")
        .expect("organization row");
    assert!(stored.delete_time.is_some());
    let keys = api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(org_id))
        .all(app.store.db())
        .await
        .expect("read keys");
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.revoke_time.is_some()));
    for key in keys {
        let mut live: api_keys::ActiveModel = key.into();
        live.revoke_time = Set(None);
        live.update(app.store.db()).await.expect("unrevoke key");
    }
    assert_invalid_key(
        get_with_api_key(&app, &org, &second).await,
        "unrevoked key of a deleted organization",
    );
    app.stop().await;
}
