//! Validation of transfer requests: every bad field is reported at once, under its
//! path (`ids[2]`, `items[1].mode`...).

use crate::{
    auth::OrgAccess,
    domain::text,
    error::Violations,
    grpc::convert,
    proto::{AssetType, TransferMode},
    service::billing::{Sign, money_in, require_request_id},
    storage::entities::organizations,
};

use super::names::{Named, external_type_problem, parse_ids};

/// Most items of one TransferAssetsBulk call.
pub(super) const MAX_ITEMS: usize = 20;
/// Longest reason.
const MAX_REASON_LEN: usize = 500;
/// Decimal places accepted in a credit amount (the ledger's precision).
const CREDIT_SCALE: u32 = 6;

/// An item as sent (TransferAssets' fields or one AssetTransferItem).
pub(super) struct RawItem<'a> {
    pub asset_type: i32,
    pub external_type: &'a str,
    pub mode: i32,
    pub ids: &'a [String],
    pub credit_amount: Option<&'a crate::proto::Money>,
}

/// A validated item.
#[derive(Debug, Clone)]
pub(super) struct Item {
    /// Zero-based position in the request.
    pub index: u32,
    pub asset_type: AssetType,
    /// For EXTERNAL only.
    pub external_type: String,
    pub mode: TransferMode,
    /// Empty = every asset of the type in the source.
    pub ids: Vec<Named>,
    /// For CREDITS only: the positive amount in micro-units of the source's currency.
    pub credit_micros: i64,
}

impl Item {
    /// The asset type's short name (`AGENTS`, `EXTERNAL`...).
    pub fn type_name(&self) -> &'static str {
        type_name(self.asset_type)
    }

    /// The mode's short name (`COPY` or `MOVE`).
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            TransferMode::Copy => "COPY",
            _ => "MOVE",
        }
    }
}

/// An asset type's short name.
pub(super) fn type_name(asset_type: AssetType) -> &'static str {
    let full = asset_type.as_str_name();
    full.strip_prefix("ASSET_TYPE_").unwrap_or(full)
}

/// Checks the organizations, reason and request id; returns the trimmed reason.
pub(super) fn parse_common(
    v: &mut Violations,
    source: &OrgAccess,
    target: &OrgAccess,
    reason: &str,
    request_id: &str,
    validate_only: bool,
) -> String {
    if source.org().id == target.org().id {
        v.add(
            "target_organization_id",
            "must differ from source_organization_id",
        );
    }
    let reason = v
        .check("reason", text::bounded(reason.trim(), MAX_REASON_LEN))
        .unwrap_or_default();
    if !validate_only {
        require_request_id(v, request_id);
    }
    reason.to_owned()
}

/// Checks one item; fields are reported under `prefix` (`""` or `items[i].`).
pub(super) fn parse_item(
    v: &mut Violations,
    prefix: &str,
    index: u32,
    raw: RawItem<'_>,
    source: &organizations::Model,
) -> Option<Item> {
    let asset_type = match AssetType::try_from(raw.asset_type) {
        Ok(t) if t != AssetType::Unspecified => Some(t),
        _ => {
            v.add(
                format!("{prefix}asset_type"),
                "must be AGENTS, ADDRESSES, MEMBERS, FEATURE_FLAGS, CREDITS or EXTERNAL",
            );
            None
        }
    };
    let mode = match TransferMode::try_from(raw.mode) {
        Ok(m) if m != TransferMode::Unspecified => Some(m),
        _ => {
            v.add(format!("{prefix}mode"), "must be COPY or MOVE");
            None
        }
    };
    let external = asset_type == Some(AssetType::External);
    if external {
        if let Some(problem) = external_type_problem(raw.external_type) {
            v.add(format!("{prefix}external_type"), problem);
        }
    } else if !raw.external_type.is_empty() {
        v.add(
            format!("{prefix}external_type"),
            "is only allowed with asset_type EXTERNAL",
        );
    }
    let credits = asset_type == Some(AssetType::Credits);
    let credit_micros = if credits {
        money_in(
            v,
            &format!("{prefix}credit_amount"),
            raw.credit_amount,
            convert::org_currency(source),
            CREDIT_SCALE,
            Sign::Positive,
        )
    } else {
        if raw.credit_amount.is_some() {
            v.add(
                format!("{prefix}credit_amount"),
                "is only allowed with asset_type CREDITS",
            );
        }
        Some(0)
    };
    // Credits ignore ids (the proto says so); other types name assets.
    let ids = match asset_type {
        Some(AssetType::Credits) | None => Vec::new(),
        Some(t) => parse_ids(v, prefix, t, raw.ids),
    };
    let (Some(asset_type), Some(mode), Some(credit_micros)) = (asset_type, mode, credit_micros)
    else {
        return None;
    };
    Some(Item {
        index,
        asset_type,
        external_type: raw.external_type.to_owned(),
        mode,
        ids,
        credit_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_short() {
        assert_eq!(type_name(AssetType::FeatureFlags), "FEATURE_FLAGS");
        assert_eq!(type_name(AssetType::External), "EXTERNAL");
    }
}
