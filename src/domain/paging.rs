//! Page sizes and opaque page tokens for keyset pagination.
//!
//! A token is base64url(JSON) of the last row's sort key plus a fingerprint of the
//! query (filter and order), so a token cannot be replayed against another query.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u64 = 500;

/// Checks a requested page size: 0 means the default; 1..=500; larger is clamped.
pub fn page_size(requested: i32) -> Result<u64, String> {
    match requested {
        n if n < 0 => Err("must not be negative".into()),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u64).min(MAX_PAGE_SIZE)),
    }
}

/// The position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Fingerprint of the query.
    pub q: String,
    /// Sort key of the last row (text form), when the order is not by id alone.
    pub k: Option<String>,
    /// Id of the last row (hex UUID).
    pub id: String,
}

/// Fingerprint of a query's filter and order.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Encodes a cursor as an opaque token.
pub fn encode(cursor: &Cursor) -> String {
    let json = serde_json::to_vec(cursor).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a token issued for the query with `fingerprint`; empty means the first page.
pub fn decode(token: &str, fingerprint: &str) -> Result<Option<Cursor>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > 1024 {
        return Err("is not a page token issued by this service".into());
    }
    let cursor: Cursor = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| "is not a page token issued by this service".to_owned())?;
    if cursor.q != fingerprint {
        return Err("belongs to a different filter or order".into());
    }
    // Only a forged token carries control characters (PostgreSQL text cannot hold NUL).
    let forged = |text: &str| text.chars().any(char::is_control);
    if cursor.k.as_deref().is_some_and(forged) || forged(&cursor.id) {
        return Err("is not a page token issued by this service".into());
    }
    Ok(Some(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_query() {
        let q = fingerprint(&["status = ACTIVE", "name"]);
        let token = encode(&Cursor {
            q: q.clone(),
            k: Some("acme".into()),
            id: "ab".into(),
        });
        assert_eq!(
            decode(&token, &q).unwrap().unwrap().k.as_deref(),
            Some("acme")
        );
        assert!(decode(&token, &fingerprint(&["", "name"])).is_err());
        assert!(decode("garbage!!", &q).is_err());
        assert_eq!(decode("", &q).unwrap(), None);
        let forged = encode(&Cursor {
            q: q.clone(),
            k: Some("a\u{0}b".into()),
            id: "ab".into(),
        });
        assert!(decode(&forged, &q).is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(1000).unwrap(), 500);
        assert!(page_size(-1).is_err());
    }
}
