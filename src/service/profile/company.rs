//! The company record: GetOrganizationProfile and UpdateOrganizationProfile.

use sea_orm::{ActiveValue::Set, IntoActiveModel};
use serde_json::{Map, Value, json};

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind},
        text,
    },
    error::{Result, Violations, quoted},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{audit, check_etag, orgs::save_versioned},
    storage::{audit::AuditRecord, entities::organizations},
};

use super::{mask_paths, org_addresses};

/// Most interest tags, and the longest tag.
const MAX_INTERESTS: usize = 20;
const MAX_INTEREST_LEN: usize = 50;
const PROFILE_FIELDS: &[&str] = &[
    "display_name",
    "description",
    "contact_name",
    "contact_email",
    "interests",
];

fn company(org: &organizations::Model) -> proto::CompanyProfile {
    proto::CompanyProfile {
        display_name: org.name.clone(),
        description: org.description.clone(),
        contact_name: org.contact_name.clone(),
        contact_email: org.contact_email.clone(),
        interests: serde_json::from_str(&org.interests).unwrap_or_default(),
    }
}

/// GetOrganizationProfile.
pub async fn get_profile(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetOrganizationProfileRequest,
) -> Result<proto::GetOrganizationProfileResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let rows = org_addresses(ctx.store.db(), org.id).await?;
    Ok(proto::GetOrganizationProfileResponse {
        company: Some(company(org)),
        owner: Some(convert::owner(org)),
        addresses: rows.iter().map(convert::address).collect(),
        etag: convert::etag(org.version),
    })
}

/// Checks interest tags: at most 20, each 1–50 characters; duplicates are dropped.
fn parse_interests(v: &mut Violations, field: &str, tags: &[String]) -> Vec<String> {
    if tags.len() > MAX_INTERESTS {
        v.add(field, format!("must have at most {MAX_INTERESTS} entries"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        if let Some(tag) = v.check(&format!("{field}[{i}]"), text::name(tag, MAX_INTEREST_LEN))
            && !out.contains(&tag)
        {
            out.push(tag);
        }
    }
    out
}

/// UpdateOrganizationProfile: the company fields named by the mask.
pub async fn update_profile(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateOrganizationProfileRequest,
) -> Result<proto::UpdateOrganizationProfileResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let input = req.company.unwrap_or_default();
    let paths = mask_paths(req.update_mask);
    let current = access.org().clone();
    let mut row = current.clone().into_active_model();
    let mut changed = Map::new();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field to update");
    }
    for path in &paths {
        match path.as_str() {
            "display_name" => {
                if let Some(name) =
                    v.check("company.display_name", text::name(&input.display_name, 100))
                {
                    changed.insert("display_name".into(), json!(name));
                    row.name = Set(name);
                }
            }
            "description" => {
                if let Some(value) = v.check(
                    "company.description",
                    text::bounded(&input.description, 1000),
                ) {
                    changed.insert("description".into(), json!(value));
                    row.description = Set(value.to_owned());
                }
            }
            "contact_name" => {
                if let Some(value) = v.check(
                    "company.contact_name",
                    text::bounded(input.contact_name.trim(), 200),
                ) {
                    changed.insert("contact_name".into(), json!(value));
                    row.contact_name = Set(value.to_owned());
                }
            }
            "contact_email" => {
                if let Some(value) = v.check(
                    "company.contact_email",
                    text::optional_email(&input.contact_email),
                ) {
                    changed.insert("contact_email".into(), json!(value));
                    row.contact_email = Set(value);
                }
            }
            "interests" => {
                let tags = parse_interests(&mut v, "company.interests", &input.interests);
                changed.insert("interests".into(), json!(tags));
                row.interests = Set(json!(tags).to_string());
            }
            other => v.add(
                "update_mask",
                format!(
                    "{} cannot be updated; updatable: {}",
                    quoted(other),
                    PROFILE_FIELDS.join(", ")
                ),
            ),
        }
    }
    v.finish()?;
    check_etag(&req.etag, current.version)?;
    let now = ctx.store.now();
    row.update_time = Set(now);
    row.version = Set(current.version + 1);
    let tx = ctx.store.write().await?;
    let updated = save_versioned(&tx, row, current.id, current.version).await?;
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, current.id),
        "changed_fields": changed.keys().collect::<Vec<_>>(),
        "changes": changed,
    });
    outbox::emit(
        &tx,
        now,
        &updated,
        types::ORGANIZATION_UPDATED,
        &caller.trace_id,
        data,
    )
    .await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: current.id,
            action: "UpdateOrganizationProfile",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, current.id),
            request_id: &caller.trace_id,
            summary: Value::Object(changed),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::UpdateOrganizationProfileResponse {
        company: Some(company(&updated)),
        etag: convert::etag(updated.version),
    })
}
