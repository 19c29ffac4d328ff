//! JWT verification with pinned algorithms, and minting for dev and operators.
//!
//! Accepted: HS256 with the configured secret (tokens without `kid`), and RS256, ES256
//! or EdDSA with public keys chosen by `kid` (PEM files or a JWKS file). A token's `alg`
//! must equal its key's algorithm, so `none` and algorithm confusion are refused.
//! `exp`, `iss`, `aud` and `sub` are required; `nbf` is honoured.

use std::{collections::HashMap, fmt, path::Path};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// Claims tenantry reads from a verified token.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenClaims {
    /// Subject: the user or service id.
    pub sub: String,
    /// Organization id or slug.
    #[serde(default)]
    pub org: Option<String>,
    /// Role names, e.g. `["CONFIG_ADMIN"]`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Email, when known.
    #[serde(default)]
    pub email: Option<String>,
}

/// Claims of a token tenantry mints.
#[derive(Debug, Clone, Serialize)]
pub struct MintClaims {
    /// Subject.
    pub sub: String,
    /// Organization id or slug.
    pub org: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A public verification key configured for a `kid`.
#[derive(Clone)]
pub struct PublicKey {
    /// The pinned algorithm.
    pub algorithm: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Verifies tokens against the configured keys.
#[derive(Clone)]
pub struct Verifier {
    issuer: String,
    audience: String,
    secret: Option<DecodingKey>,
    keys: HashMap<String, PublicKey>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("hs256", &self.secret.is_some())
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Parses an algorithm name accepted for public keys.
pub fn parse_public_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" | "EDDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!(
            "unsupported algorithm {other:?}; use RS256, ES256 or EdDSA"
        )),
    }
}

/// Loads a PEM public key for `algorithm`.
pub fn load_pem(algorithm: Algorithm, path: &Path) -> Result<PublicKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        other => return Err(format!("unsupported algorithm {other:?}")),
    }
    .map_err(|e| {
        format!(
            "{} is not a valid {algorithm:?} public key: {e}",
            path.display()
        )
    })?;
    Ok(PublicKey { algorithm, key })
}

/// Loads every key of a JWKS file; each key needs a `kid`. The algorithm is the key's
/// `alg` or, when absent, follows from its type (RSA → RS256, EC P-256 → ES256,
/// OKP Ed25519 → EdDSA).
pub fn load_jwks(path: &Path) -> Result<Vec<(String, PublicKey)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a JWKS: {e}", path.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("a key in {} has no kid", path.display()))?;
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
            (Some(KeyAlgorithm::EdDSA), _) => Algorithm::EdDSA,
            (Some(other), _) => return Err(format!("key {kid}: unsupported alg {other:?}")),
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            (None, _) => return Err(format!("key {kid}: cannot tell its algorithm; set alg")),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        keys.push((kid, PublicKey { algorithm, key }));
    }
    Ok(keys)
}

impl Verifier {
    /// A verifier for `issuer` and `audience` with an optional HS256 secret and public keys.
    pub fn new(
        issuer: String,
        audience: String,
        secret: Option<&[u8]>,
        keys: Vec<(String, PublicKey)>,
    ) -> Self {
        Verifier {
            issuer,
            audience,
            secret: secret.map(DecodingKey::from_secret),
            keys: keys.into_iter().collect(),
        }
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        self.secret.is_some() || !self.keys.is_empty()
    }

    /// Verifies a token and returns its claims, or why it was refused.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, String> {
        if token.len() > 16 * 1024 {
            return Err("token is too large".into());
        }
        let header = decode_header(token).map_err(|_| "malformed token".to_owned())?;
        let (algorithm, key) = match &header.kid {
            Some(kid) => {
                let key = self.keys.get(kid).ok_or("unknown key id")?;
                (key.algorithm, &key.key)
            }
            None => (
                Algorithm::HS256,
                self.secret
                    .as_ref()
                    .ok_or("token has no kid and no shared secret is configured")?,
            ),
        };
        if header.alg != algorithm {
            return Err("token algorithm does not match its key".into());
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        decode::<TokenClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| format!("invalid token: {}", describe(&e)))
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidAlgorithm => "algorithm not allowed",
        _ => "malformed",
    }
}

/// Mints an HS256 token.
pub fn mint(secret: &[u8], claims: &MintClaims) -> Result<String, String> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign token: {e}"))
}
