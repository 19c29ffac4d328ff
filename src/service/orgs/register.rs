//! RegisterOrganization: self-service signup of a tenant owned by the calling user,
//! gated by pre-approvals when signup is closed.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        events::types,
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
        billing::quotas::{account_org_limit, effective_limits},
        commit, idempotency_key, replayed, settle,
        subscriptions::{limit_reached, owned},
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{members, organizations},
    },
};

use super::{
    create::check_agency_room,
    slugs::{choose_slug, lock_slug_allocation, slug_taken_error},
    validation::parse_currency,
};

/// Refuses another organization to user `sub` when the live organizations they own
/// already reach their account's `max_organizations`: the highest among the plans of
/// those organizations (unlimited when any is unlimited; the free plan's when they own
/// none). Registrations are serialized by the slug allocation lock, so concurrent
/// signups of one user cannot overrun it.
async fn check_owner_room(ctx: &Ctx, tx: &Tx, sub: &str) -> Result<()> {
    let catalogue = &ctx.settings.billing.catalogue;
    let owned = owned(&**tx, sub).await?;
    let Some(allowed) = account_org_limit(catalogue, &owned) else {
        return Ok(());
    };
    let current = i64::try_from(owned.len()).unwrap_or(i64::MAX);
    if current < allowed {
        return Ok(());
    }
    // The organization whose plan sets the account's limit names it in the error.
    let best = owned
        .iter()
        .max_by_key(|o| effective_limits(catalogue, o).max_organizations);
    Err(match best {
        Some(org) => limit_reached(org, "max_organizations", current, allowed),
        None => Error::rejected(
            tonic::Code::ResourceExhausted,
            "PLAN_LIMIT_REACHED",
            format!("the account may own {allowed} organizations and owns {current}"),
        )
        .with("limit", "max_organizations")
        .with("current", current)
        .with("allowed", allowed),
    })
}

/// RegisterOrganization: self-service signup of a tenant owned by the caller. With
/// closed signup on, a valid pre-approval (the caller's email, or `signup_code`) is
/// required; a code issued by an agency places the new tenant under that agency. The
/// pre-approval's use is consumed in the same transaction.
pub async fn register(
    ctx: Ctx,
    caller: Caller,
    req: proto::RegisterOrganizationRequest,
) -> Result<proto::RegisterOrganizationResponse> {
    let principal = caller.principal()?.clone();
    let crate::auth::Actor::User { sub, email } = &principal.actor else {
        return Err(Error::PermissionDenied(
            "only a user can register an organization".into(),
        ));
    };
    let mut v = Violations::new();
    let name = v.check("name", text::name(&req.name, 100));
    let explicit_slug = if req.slug.is_empty() {
        None
    } else {
        v.check("slug", Slug::parse(&req.slug))
    };
    let owner_name = v
        .check(
            "owner_name",
            text::bounded(req.owner_name.trim(), 200).map(str::to_owned),
        )
        .unwrap_or_default();
    let currency = parse_currency(&mut v, "currency", &req.currency).unwrap_or(Currency::Usd);
    let code = v
        .check(
            "signup_code",
            text::bounded(req.signup_code.trim(), 64).map(str::to_owned),
        )
        .unwrap_or_default();
    v.finish()?;
    let Some(email) = email.as_deref().and_then(|e| text::email(e).ok()) else {
        return Err(Error::precondition(
            "EMAIL_REQUIRED",
            "the caller's token carries no valid email claim",
        ));
    };
    let Some(name) = name else {
        return Err(Error::Internal("validated name missing".into()));
    };
    let key = idempotency_key(&principal, "RegisterOrganization", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        lock_slug_allocation(&tx).await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let now = ctx.store.now();
        let approval = crate::service::signups::find_valid(&*tx, &email, &code, now).await?;
        if approval.is_none() && (ctx.settings.closed_signup || !code.is_empty()) {
            return Err(Error::precondition(
                "SIGNUP_NOT_APPROVED",
                "signup is by invitation only; this email or code is not pre-approved",
            ));
        }
        check_owner_room(&ctx, &tx, sub).await?;
        let mut parent_id = None;
        if let Some(approval) = &approval {
            crate::service::signups::consume(&tx, approval).await?;
            let issuer = organizations::Entity::find_by_id(approval.organization_id)
                .one(&*tx)
                .await?;
            if let Some(issuer) =
                issuer.filter(|o| o.kind == OrgKind::Agency.as_str() && o.delete_time.is_none())
            {
                check_agency_room(&ctx, &tx, issuer.id).await?;
                parent_id = Some(issuer.id);
            }
        }
        let (slug, _) = choose_slug(&tx, explicit_slug.clone(), &name).await?;
        let id = new_id();
        let row = organizations::ActiveModel {
            id: Set(id),
            name: Set(name.clone()),
            slug: Set(slug.as_str().to_owned()),
            kind: Set(OrgKind::Tenant.as_str().to_owned()),
            parent_id: Set(parent_id),
            status: Set(OrgStatus::Active.as_str().to_owned()),
            contact_name: Set(owner_name.clone()),
            contact_email: Set(email.clone()),
            description: Set(String::new()),
            interests: Set("[]".to_owned()),
            billing_rate_micros: Set(0),
            currency: Set(currency.code().to_owned()),
            plan: Set(FREE_PLAN.to_owned()),
            owner_user_id: Set(sub.clone()),
            owner_email: Set(email.clone()),
            owner_name: Set(owner_name.clone()),
            spend_limit_micros: Set(None),
            max_agents: Set(0),
            max_phone_numbers: Set(0),
            max_concurrent_calls: Set(0),
            alert_thresholds: Set("[]".to_owned()),
            alert_emails: Set("[]".to_owned()),
            alert_action: Set(SpendAction::NotifyOnly.as_str().to_owned()),
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
        let member = members::ActiveModel {
            id: Set(new_id()),
            organization_id: Set(id),
            user_id: Set(sub.clone()),
            email: Set(email.clone()),
            name: Set(owner_name.clone()),
            role: Set(MemberRole::ConfigAdmin.as_str().to_owned()),
            is_owner: Set(true),
            create_time: Set(now),
            update_time: Set(now),
            version: Set(1),
        }
        .insert(&*tx)
        .await?;
        let request_id = audit_request_id(&caller, key.as_ref());
        outbox::emit(
            &tx,
            now,
            &row,
            types::ORGANIZATION_CREATED,
            request_id,
            json!({
                "organization_id": ids::encode(IdKind::Organization, id),
                "name": row.name, "slug": row.slug, "kind": row.kind,
                "parent_id": parent_id.map(|p| ids::encode(IdKind::Organization, p)),
                "currency": row.currency, "plan": row.plan,
                "owner_member_id": ids::encode(IdKind::Member, member.id),
            }),
        )
        .await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: id,
                action: "RegisterOrganization",
                target_type: "organization",
                target_id: ids::encode(IdKind::Organization, id),
                request_id,
                summary: json!({
                    "name": row.name, "slug": row.slug,
                    "parent_id": parent_id.map(|p| ids::encode(IdKind::Organization, p)),
                    "pre_approval": approval.as_ref().map(|a| ids::encode(IdKind::Signup, a.id)),
                }),
            },
        )
        .await?;
        let response = proto::RegisterOrganizationResponse {
            organization: Some(convert::organization(
                &ctx.settings.billing.catalogue,
                &row,
                0,
            )),
            owner: Some(convert::member(&member)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await.map_err(|e| {
        match (&explicit_slug, e.is_unique_violation()) {
            (Some(slug), true) => slug_taken_error(slug.as_str()),
            _ => e,
        }
    })
}
