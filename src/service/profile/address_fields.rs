//! Validation of address fields (type, lines, city, region, postal code, country).

use sea_orm::ActiveValue::Set;
use serde_json::{Map, Value, json};

use crate::{
    domain::text,
    error::{Result, Violations, quoted},
    grpc::convert,
    proto,
    storage::entities::addresses,
};

pub(super) const ADDRESS_FIELDS: &[&str] = &[
    "type",
    "line1",
    "line2",
    "city",
    "region",
    "postal_code",
    "country",
];

/// Checks one field of an address (`path` as in the update mask) and sets it on `row`.
pub(super) fn apply_field(
    v: &mut Violations,
    path: &str,
    input: &proto::Address,
    row: &mut addresses::ActiveModel,
    changed: &mut Map<String, Value>,
) {
    let field = format!("address.{path}");
    let value = match path {
        "type" => match convert::address_kind_from(input.r#type) {
            Some(kind) => {
                row.kind = Set(kind.as_str().to_owned());
                Some(kind.as_str().to_owned())
            }
            None => {
                v.add(field, "must be BILLING, SHIPPING or MAILING");
                None
            }
        },
        "line1" => v
            .check(&field, text::name(&input.line1, 200))
            .inspect(|s| row.line1 = Set(s.clone())),
        "line2" => v
            .check(&field, optional(&input.line2, 200))
            .inspect(|s| row.line2 = Set(s.clone())),
        "city" => v
            .check(&field, text::name(&input.city, 100))
            .inspect(|s| row.city = Set(s.clone())),
        "region" => v
            .check(&field, optional(&input.region, 100))
            .inspect(|s| row.region = Set(s.clone())),
        "postal_code" => v
            .check(&field, optional(&input.postal_code, 20))
            .inspect(|s| row.postal_code = Set(s.clone())),
        "country" => v
            .check(&field, country(&input.country))
            .inspect(|s| row.country = Set(s.clone())),
        other => {
            v.add(
                "update_mask",
                format!(
                    "{} cannot be updated; updatable: {}",
                    quoted(other),
                    ADDRESS_FIELDS.join(", ")
                ),
            );
            None
        }
    };
    if let Some(value) = value {
        changed.insert(path.to_owned(), json!(value));
    }
}

fn optional(text: &str, max: usize) -> Result<String, String> {
    text::bounded(text.trim(), max).map(str::to_owned)
}

/// An ISO 3166-1 alpha-2 code: two uppercase ASCII letters.
fn country(code: &str) -> Result<String, String> {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err("must be an ISO 3166-1 alpha-2 code: two uppercase letters like NG".into())
    }
}
