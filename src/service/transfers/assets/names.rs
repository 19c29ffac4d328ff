//! The ids an item names, checked per asset type: row TypeIDs for agents and
//! addresses, user ids for members, flag names, external ids; and external types.

use std::collections::HashMap;

use uuid::Uuid;

use crate::{
    domain::{
        ids::{self, IdKind},
        plans,
    },
    error::Violations,
    proto::AssetType,
    service::transfers::registry,
};

/// Most ids of one item.
const MAX_IDS: usize = 500;
/// Longest user id (the `members.user_id` column).
const MAX_USER_ID_LEN: usize = 255;

/// One asset named by the caller: the id as given and, for row ids, its uuid.
#[derive(Debug, Clone)]
pub(super) struct Named {
    pub given: String,
    pub uuid: Option<Uuid>,
}

/// Checks the ids of an item of type `asset_type`: at most [`MAX_IDS`], each in the
/// type's format, none repeated.
pub(super) fn parse_ids(
    v: &mut Violations,
    prefix: &str,
    asset_type: AssetType,
    raw: &[String],
) -> Vec<Named> {
    if raw.len() > MAX_IDS {
        v.add(
            format!("{prefix}ids"),
            format!("must list at most {MAX_IDS} ids"),
        );
        return Vec::new();
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, given) in raw.iter().enumerate() {
        let field = format!("{prefix}ids[{i}]");
        if let Some(first) = seen.get(given.as_str()) {
            v.add(&field, format!("repeats ids[{first}]"));
            continue;
        }
        seen.insert(given.as_str(), i);
        let parsed = match asset_type {
            AssetType::Agents => row_id(IdKind::Agent, given),
            AssetType::Addresses => row_id(IdKind::Address, given),
            AssetType::Members => {
                text_id(given, MAX_USER_ID_LEN, "must be a user id").map(|()| None)
            }
            AssetType::FeatureFlags => match plans::flag_problem(given) {
                Some(problem) => Err(problem.to_owned()),
                None => Ok(None),
            },
            AssetType::External => registry::external_id(given).map(|_| None),
            AssetType::Credits | AssetType::Unspecified => Ok(None),
        };
        match parsed {
            Ok(uuid) => out.push(Named {
                given: given.clone(),
                uuid,
            }),
            Err(problem) => v.add(field, problem),
        }
    }
    out
}

fn row_id(kind: IdKind, given: &str) -> Result<Option<Uuid>, String> {
    ids::decode(kind, given)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn text_id(given: &str, max: usize, what: &str) -> Result<(), String> {
    let length = given.chars().count();
    if length == 0 || length > max || given.chars().any(char::is_control) {
        return Err(format!("{what} of 1 to {max} printable characters"));
    }
    Ok(())
}

/// Why an external type is invalid (as RegisterAsset checks it), if it is.
pub(super) fn external_type_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("is required with asset_type EXTERNAL".to_owned());
    }
    registry::external_type(text).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_types_are_lower_snake_case() {
        assert_eq!(external_type_problem("knowledge_base"), None);
        assert_eq!(external_type_problem("site2"), None);
        assert!(external_type_problem("").is_some());
        assert!(external_type_problem("Site").is_some());
        assert!(external_type_problem("2site").is_some());
        assert!(external_type_problem("phone-number").is_some());
        assert!(external_type_problem(&"a".repeat(65)).is_some());
        assert!(external_type_problem("kb_").is_some());
        assert!(external_type_problem("a__b").is_some());
    }
}
