//! TypeIDs: a UUID v7 shown as `prefix_` + 26 lowercase Crockford base32 characters.

use std::fmt;

use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The kinds of id tenantry issues, by TypeID prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `org_`
    Organization,
    /// `agt_`
    Agent,
    /// `mem_`
    Member,
    /// `ivt_`
    Invitation,
    /// `adr_`
    Address,
    /// `sgn_`
    Signup,
    /// `aud_`
    Audit,
    /// `key_`
    ApiKey,
    /// `txn_`: a credits ledger entry.
    Transaction,
    /// `inv_`: an invoice.
    Invoice,
    /// `brec_`: a billing record.
    BillingRecord,
    /// `sub_`: a subscription.
    Subscription,
    /// `svcp_`: an add-on service purchase.
    ServicePurchase,
    /// `agr_`: a service agreement.
    Agreement,
    /// `evt_`: a domain event.
    Event,
    /// `whe_`: a webhook endpoint.
    WebhookEndpoint,
    /// `whd_`: one event's delivery to one endpoint.
    WebhookDelivery,
    /// `eml_`: a queued email.
    Email,
    /// `xfer_`: a tenant transfer between agencies.
    TenantTransfer,
    /// `atr_`: an asset transfer.
    AssetTransfer,
    /// `ast_`: a registered external asset.
    ExternalAsset,
}

impl IdKind {
    /// The TypeID prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Organization => "org",
            IdKind::Agent => "agt",
            IdKind::Member => "mem",
            IdKind::Invitation => "ivt",
            IdKind::Address => "adr",
            IdKind::Signup => "sgn",
            IdKind::Audit => "aud",
            IdKind::ApiKey => "key",
            IdKind::Transaction => "txn",
            IdKind::Invoice => "inv",
            IdKind::BillingRecord => "brec",
            IdKind::Subscription => "sub",
            IdKind::ServicePurchase => "svcp",
            IdKind::Agreement => "agr",
            IdKind::Event => "evt",
            IdKind::WebhookEndpoint => "whe",
            IdKind::WebhookDelivery => "whd",
            IdKind::Email => "eml",
            IdKind::TenantTransfer => "xfer",
            IdKind::AssetTransfer => "atr",
            IdKind::ExternalAsset => "ast",
        }
    }
}

/// Encodes a UUID as a TypeID with `kind`'s prefix.
pub fn encode(kind: IdKind, id: Uuid) -> String {
    let value = id.as_u128();
    let mut out = String::with_capacity(kind.prefix().len() + 27);
    out.push_str(kind.prefix());
    out.push('_');
    for i in (0..26).rev() {
        let index = ((value >> (5 * i)) & 31) as usize;
        out.push(ALPHABET[index] as char);
    }
    out
}

/// Why a string is not a TypeID of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadId(String);

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes a TypeID, checking its prefix.
pub fn decode(kind: IdKind, text: &str) -> Result<Uuid, BadId> {
    let expected = kind.prefix();
    let Some(suffix) = text
        .strip_prefix(expected)
        .and_then(|rest| rest.strip_prefix('_'))
    else {
        return Err(BadId(format!("must be an id starting with `{expected}_`")));
    };
    if suffix.len() != 26 {
        return Err(BadId(format!(
            "must be `{expected}_` followed by 26 base32 characters"
        )));
    }
    let mut value: u128 = 0;
    for (position, byte) in suffix.bytes().enumerate() {
        let Some(digit) = ALPHABET.iter().position(|&c| c == byte) else {
            return Err(BadId(
                "contains a character outside lowercase base32".into(),
            ));
        };
        if position == 0 && digit > 7 {
            return Err(BadId("is out of range".into()));
        }
        value = (value << 5) | digit as u128;
    }
    Ok(Uuid::from_u128(value))
}

/// A fresh time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_typeid_spec() {
        let id = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        let text = encode(IdKind::Organization, id);
        assert_eq!(text, "org_01h455vb4pex5vsknk084sn02q");
        assert_eq!(decode(IdKind::Organization, &text).unwrap(), id);
    }

    #[test]
    fn rejects_wrong_prefix_length_and_alphabet() {
        let id = encode(IdKind::Agent, new_id());
        assert!(decode(IdKind::Organization, &id).is_err());
        assert!(decode(IdKind::Agent, "agt_short").is_err());
        assert!(decode(IdKind::Agent, "agt_8zzzzzzzzzzzzzzzzzzzzzzzzz").is_err());
        assert!(decode(IdKind::Agent, "agt_0000000000000000000000000u").is_err());
    }
}
