//! CreateOrganization: a tenant or agency under its parent, with an optional owner
//! invitation whose token is shown once.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::{Caller, OrgAccess},
    domain::events::types,
    domain::{
        ids::{self, IdKind, new_id},
        money::Currency,
        org::{MemberRole, OrgKind, OrgStatus, SpendAction},
        plans::FREE_PLAN,
        slug::Slug,
        text,
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id,
        billing::quotas::effective_limits,
        commit_redacted, idempotency_key,
        members::{NewInvitation, issue_invitation},
        replayed, settle,
        subscriptions::{limit_reached, organizations_count},
    },
    storage::{Tx, audit::AuditRecord, entities::organizations},
};

use super::{
    root_org,
    slugs::{choose_slug, lock_slug_allocation, slug_taken_error},
    validation::{Alerts, Limits, Settings, parse_currency, parse_settings},
};

struct NewOrg {
    name: String,
    explicit_slug: Option<Slug>,
    kind: OrgKind,
    parent_id: Option<Uuid>,
    currency: Currency,
    settings: Settings,
    owner: Option<(String, String)>,
}

/// CreateOrganization.
pub async fn create(
    ctx: Ctx,
    caller: Caller,
    req: proto::CreateOrganizationRequest,
) -> Result<proto::CreateOrganizationResponse> {
    let principal = caller.principal()?.clone();
    let org_in = req.organization.clone().unwrap_or_default();
    let kind = match proto::OrganizationKind::try_from(org_in.kind) {
        Ok(proto::OrganizationKind::Unspecified) | Ok(proto::OrganizationKind::Tenant) => {
            Some(OrgKind::Tenant)
        }
        Ok(proto::OrganizationKind::Agency) => Some(OrgKind::Agency),
        Ok(proto::OrganizationKind::Root) | Err(_) => None,
    };
    // Authorize against the parent (the root organization when none is given).
    let access = if org_in.parent_id.is_empty() {
        let root = root_org(ctx.store.db()).await?;
        caller.authorize_row(root)?
    } else {
        caller
            .authorize(&ctx.store, "organization.parent_id", &org_in.parent_id)
            .await?
    };
    let mut v = Violations::new();
    let name = v.check("organization.name", text::name(&org_in.name, 100));
    let explicit_slug = if org_in.slug.is_empty() {
        None
    } else {
        v.check("organization.slug", Slug::parse(&org_in.slug))
    };
    let parent = access.org();
    let parent_kind: OrgKind = parent.kind.parse().unwrap_or(OrgKind::Tenant);
    match kind {
        None => v.add(
            "organization.kind",
            "must be AGENCY or TENANT (there is exactly one root)",
        ),
        Some(OrgKind::Agency) if !org_in.parent_id.is_empty() && parent_kind != OrgKind::Root => v
            .add(
                "organization.parent_id",
                "an agency's parent must be the root organization",
            ),
        Some(OrgKind::Tenant) if !org_in.parent_id.is_empty() && parent_kind != OrgKind::Agency => {
            v.add(
                "organization.parent_id",
                "a tenant's parent must be an agency; leave it empty for a self-managed tenant",
            )
        }
        _ => {}
    }
    let currency =
        parse_currency(&mut v, "organization.currency", &org_in.currency).unwrap_or(Currency::Usd);
    let settings = parse_settings(&mut v, &org_in, currency, &ctx.settings.billing.catalogue);
    let owner = req.owner.as_ref().and_then(|o| {
        let email = v.check("owner.email", text::email(&o.email));
        let first = v.check(
            "owner.first_name",
            text::bounded(&o.first_name, 100).map(str::trim),
        );
        let last = v.check(
            "owner.last_name",
            text::bounded(&o.last_name, 100).map(str::trim),
        );
        let name = match (first, last) {
            (Some(f), Some(l)) => format!("{f} {l}").trim().to_owned(),
            _ => String::new(),
        };
        email.map(|e| (e, name))
    });
    v.finish()?;
    let (Some(name), Some(kind)) = (name, kind) else {
        return Err(Error::Internal("validated fields missing".into()));
    };
    let parent_id = match (kind, org_in.parent_id.is_empty()) {
        (OrgKind::Agency, _) => Some(parent.id),
        (_, true) => None,
        (_, false) => Some(parent.id),
    };
    let new = NewOrg {
        name,
        explicit_slug,
        kind,
        parent_id,
        currency,
        settings,
        owner,
    };
    let key = idempotency_key(&principal, "CreateOrganization", &req.request_id, &req)?;
    // A generated slug can lose a race to a concurrent create; try again with the next.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = insert_org(&ctx, &caller, &access, &new, key.as_ref()).await;
        let settled = settle(&ctx, key.as_ref(), result).await;
        match settled {
            Err(e) if e.is_unique_violation() && new.explicit_slug.is_none() && attempts < 5 => {
                continue;
            }
            Err(e) if e.is_unique_violation() => {
                return Err(new
                    .explicit_slug
                    .as_ref()
                    .map(|s| slug_taken_error(s.as_str()))
                    .unwrap_or(e));
            }
            other => return other,
        }
    }
}

/// Refuses a new tenant under an agency that already has as many live tenants as its
/// plan's `max_organizations` allows (RESOURCE_EXHAUSTED `PLAN_LIMIT_REACHED`). The
/// limit is the agency's, so it binds everyone creating under the agency, operators
/// included: an operator raises it by changing the agency's plan. Creates are
/// serialized by the slug allocation lock, so concurrent creates cannot overrun it.
pub(crate) async fn check_agency_room(ctx: &Ctx, tx: &Tx, agency_id: Uuid) -> Result<()> {
    let Some(agency) = organizations::Entity::find_by_id(agency_id)
        .one(&**tx)
        .await?
        .filter(|o| o.kind == OrgKind::Agency.as_str() && o.delete_time.is_none())
    else {
        return Ok(());
    };
    let Some(allowed) =
        effective_limits(&ctx.settings.billing.catalogue, &agency).max_organizations
    else {
        return Ok(());
    };
    let current = organizations_count(&**tx, &agency).await?;
    if current >= allowed {
        return Err(limit_reached(
            &agency,
            "max_organizations",
            current,
            allowed,
        ));
    }
    Ok(())
}

async fn insert_org(
    ctx: &Ctx,
    caller: &Caller,
    access: &OrgAccess,
    new: &NewOrg,
    key: Option<&crate::storage::idempotency::Key>,
) -> Result<proto::CreateOrganizationResponse> {
    let tx = ctx.store.write().await?;
    lock_slug_allocation(&tx).await?;
    if let Some(done) = replayed(&tx, key).await? {
        return Ok(done);
    }
    if let Some(parent_id) = new.parent_id
        && new.kind == OrgKind::Tenant
    {
        check_agency_room(ctx, &tx, parent_id).await?;
    }
    let (slug, _) = choose_slug(&tx, new.explicit_slug.clone(), &new.name).await?;
    let now = ctx.store.now();
    let id = new_id();
    let s = &new.settings;
    let limits = s.limits.clone().unwrap_or(Limits {
        spend_limit_micros: None,
        max_agents: 0,
        max_phone_numbers: 0,
        max_concurrent_calls: 0,
    });
    let alerts = s.alerts.clone().unwrap_or(Alerts {
        thresholds: vec![],
        emails: vec![],
        action: SpendAction::NotifyOnly,
    });
    let (owner_email, owner_name) = new.owner.clone().unwrap_or_default();
    let row = organizations::ActiveModel {
        id: Set(id),
        name: Set(new.name.clone()),
        slug: Set(slug.as_str().to_owned()),
        kind: Set(new.kind.as_str().to_owned()),
        parent_id: Set(new.parent_id),
        status: Set(OrgStatus::Active.as_str().to_owned()),
        contact_name: Set(s.contact_name.clone().unwrap_or_default()),
        contact_email: Set(s.contact_email.clone().unwrap_or_default()),
        description: Set(s.description.clone().unwrap_or_default()),
        interests: Set("[]".to_owned()),
        billing_rate_micros: Set(s.rate_micros.unwrap_or(0)),
        currency: Set(new.currency.code().to_owned()),
        plan: Set(s.plan.clone().unwrap_or_else(|| FREE_PLAN.to_owned())),
        owner_user_id: Set(String::new()),
        owner_email: Set(owner_email.clone()),
        owner_name: Set(owner_name.clone()),
        spend_limit_micros: Set(limits.spend_limit_micros),
        max_agents: Set(limits.max_agents),
        max_phone_numbers: Set(limits.max_phone_numbers),
        max_concurrent_calls: Set(limits.max_concurrent_calls),
        alert_thresholds: Set(json!(alerts.thresholds).to_string()),
        alert_emails: Set(json!(alerts.emails).to_string()),
        alert_action: Set(alerts.action.as_str().to_owned()),
        deactivation_reason: Set(String::new()),
        create_time: Set(now),
        update_time: Set(now),
        delete_time: Set(None),
        feature_overrides: Set("{}".to_owned()),
        data_deletion_time: Set(None),
        version: Set(1),
    }
    .insert(&*tx)
    .await?;
    let principal = access.principal();
    let request_id = audit_request_id(caller, key);
    let org_id = ids::encode(IdKind::Organization, id);
    outbox::emit(
        &tx,
        now,
        &row,
        types::ORGANIZATION_CREATED,
        request_id,
        json!({
            "organization_id": org_id, "name": row.name, "slug": row.slug, "kind": row.kind,
            "parent_id": row.parent_id.map(|p| ids::encode(IdKind::Organization, p)),
            "currency": row.currency, "plan": row.plan,
        }),
    )
    .await?;
    let mut response = proto::CreateOrganizationResponse {
        organization: Some(convert::organization(
            &ctx.settings.billing.catalogue,
            &row,
            0,
        )),
        ..Default::default()
    };
    if let Some((email, name)) = &new.owner {
        let owner = NewInvitation {
            email,
            name,
            role: MemberRole::ConfigAdmin,
            owner: true,
            inviter: principal.actor_id(),
        };
        let (invitation, token) = issue_invitation(ctx, &tx, &row, now, owner, request_id).await?;
        response.owner_invitation = Some(convert::invitation(&invitation, now));
        response.owner_invitation_token = token;
    }
    audit(
        &tx,
        ctx,
        principal,
        AuditRecord {
            organization_id: id,
            action: "CreateOrganization",
            target_type: "organization",
            target_id: org_id,
            request_id,
            summary: json!({
                "name": row.name, "slug": row.slug, "kind": row.kind,
                "parent_id": row.parent_id.map(|p| ids::encode(IdKind::Organization, p)),
                "currency": row.currency, "plan": row.plan,
                "billing_rate_micros": row.billing_rate_micros,
                "owner_invited": new.owner.is_some(),
            }),
        },
    )
    .await?;
    // The invitation token is shown once; a retry gets the response without it (the
    // owner can be re-invited with InviteMember).
    commit_redacted(ctx, tx, key, response, |stored| {
        stored.owner_invitation_token.clear()
    })
    .await
}
