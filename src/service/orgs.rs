//! Organizations: create, read, list, update, delete, slugs, activation, API keys and
//! self-service registration.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, ExprTrait, FromQueryResult, IntoActiveModel, Order,
    QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Func, LikeExpr, LockType},
};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::{
    auth::{Caller, OrgAccess, OrgRef, api_key, find_org, policy::CallerRole},
    domain::{
        filter::{self, Op},
        ids::{self, IdKind, new_id},
        money::{self, Currency},
        org::{AgentStatus, MemberRole, OrgKind, OrgStatus, SpendAction},
        paging,
        slug::Slug,
        text,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{
        agent_count, audit, audit_request_id, check_etag, commit, commit_redacted, idempotency_key,
        replayed, settle,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{agents, api_keys, invitations, members, organizations},
    },
};

/// Plan ids known before the plan catalogue lands (the default catalogue's ids).
pub const KNOWN_PLANS: &[&str] = &["free", "basic", "pro", "team", "business", "enterprise"];
/// Maximum alert thresholds and alert emails.
const MAX_ALERT_ENTRIES: usize = 10;
/// Length of a generated slug's prefix that survives every `-N` suffix up to `-99999999`.
const SUFFIX_STEM_LEN: usize = crate::domain::slug::MAX_LEN - 9;
/// Upper bound of count limits (agents, phone numbers, concurrent calls).
const MAX_COUNT_LIMIT: i32 = 1_000_000;

/// Validated billing and contact settings of an organization.
#[derive(Debug, Clone, Default)]
struct Settings {
    contact_name: Option<String>,
    contact_email: Option<String>,
    description: Option<String>,
    rate_micros: Option<i64>,
    plan: Option<String>,
    limits: Option<Limits>,
    alerts: Option<Alerts>,
}

#[derive(Debug, Clone)]
struct Limits {
    spend_limit_micros: Option<i64>,
    max_agents: i32,
    max_phone_numbers: i32,
    max_concurrent_calls: i32,
}

#[derive(Debug, Clone)]
struct Alerts {
    thresholds: Vec<u32>,
    emails: Vec<String>,
    action: SpendAction,
}

fn parse_rate(
    v: &mut Violations,
    field: &str,
    money_in: &proto::Money,
    currency: Currency,
) -> Option<i64> {
    if !money_in.currency_code.is_empty() && money_in.currency_code != currency.code() {
        v.add(
            format!("{field}.currency_code"),
            format!("must be the organization's currency {currency}"),
        );
        return None;
    }
    v.check(
        &format!("{field}.amount"),
        money::parse_amount(&money_in.amount, 2, false),
    )
    .map(money::to_micros)
}

fn parse_count(v: &mut Violations, field: &str, value: i32) -> i32 {
    if !(0..=MAX_COUNT_LIMIT).contains(&value) {
        v.add(field, format!("must be between 0 and {MAX_COUNT_LIMIT}"));
    }
    value
}

fn parse_limits(
    v: &mut Violations,
    field: &str,
    limits: &proto::UsageLimits,
    currency: Currency,
) -> Limits {
    Limits {
        spend_limit_micros: limits
            .monthly_spend_limit
            .as_ref()
            .and_then(|m| parse_rate(v, &format!("{field}.monthly_spend_limit"), m, currency)),
        max_agents: parse_count(v, &format!("{field}.max_agents"), limits.max_agents),
        max_phone_numbers: parse_count(
            v,
            &format!("{field}.max_phone_numbers"),
            limits.max_phone_numbers,
        ),
        max_concurrent_calls: parse_count(
            v,
            &format!("{field}.max_concurrent_calls"),
            limits.max_concurrent_calls,
        ),
    }
}

fn parse_alerts(v: &mut Violations, field: &str, alerts: &proto::BillingAlerts) -> Alerts {
    let mut thresholds = alerts.alert_thresholds.clone();
    if thresholds.len() > MAX_ALERT_ENTRIES {
        v.add(
            format!("{field}.alert_thresholds"),
            format!("must have at most {MAX_ALERT_ENTRIES} entries"),
        );
    }
    if thresholds.iter().any(|t| !(1..=100).contains(t)) {
        v.add(
            format!("{field}.alert_thresholds"),
            "must be percentages between 1 and 100",
        );
    }
    thresholds.sort_unstable();
    thresholds.dedup();
    if alerts.alert_emails.len() > MAX_ALERT_ENTRIES {
        v.add(
            format!("{field}.alert_emails"),
            format!("must have at most {MAX_ALERT_ENTRIES} entries"),
        );
    }
    let emails = alerts
        .alert_emails
        .iter()
        .enumerate()
        .filter_map(|(i, e)| v.check(&format!("{field}.alert_emails[{i}]"), text::email(e)))
        .collect();
    let action = match proto::SpendLimitAction::try_from(alerts.action_at_100) {
        Ok(proto::SpendLimitAction::Unspecified) | Ok(proto::SpendLimitAction::NotifyOnly) => {
            SpendAction::NotifyOnly
        }
        Ok(proto::SpendLimitAction::SuspendUsage) => SpendAction::SuspendUsage,
        Err(_) => {
            v.add(
                format!("{field}.action_at_100"),
                "must be NOTIFY_ONLY or SUSPEND_USAGE",
            );
            SpendAction::NotifyOnly
        }
    };
    Alerts {
        thresholds,
        emails,
        action,
    }
}

fn parse_plan(v: &mut Violations, field: &str, plan: &str) -> Option<String> {
    if KNOWN_PLANS.contains(&plan) {
        Some(plan.to_owned())
    } else {
        v.add(field, format!("must be one of {}", KNOWN_PLANS.join(", ")));
        None
    }
}

fn parse_currency(v: &mut Violations, field: &str, code: &str) -> Option<Currency> {
    if code.is_empty() {
        return Some(Currency::Usd);
    }
    v.check(field, code.parse::<Currency>())
}

/// Reserves a slug: an explicit one must be free (`SLUG_TAKEN`); a generated one gets
/// the first free `-N` suffix. Deleted organizations keep their slugs forever. The
/// caller holds [`lock_slug_allocation`].
async fn choose_slug(tx: &Tx, explicit: Option<Slug>, name: &str) -> Result<(Slug, bool)> {
    if let Some(slug) = explicit {
        if slug_taken(&**tx, slug.as_str()).await? {
            return Err(slug_taken_error(slug.as_str()));
        }
        return Ok((slug, false));
    }
    Ok((
        free_generated_slug(&**tx, &Slug::generate(name)).await?,
        true,
    ))
}

/// Serializes organization creation until commit, so concurrent creates of one name
/// get `-2`, `-3`… instead of racing for one slug, and a retry waiting for its twin
/// finds the twin's stored result. Taken before the idempotency lookup. The root
/// organization's row is the lock (PostgreSQL, `FOR NO KEY UPDATE`, which leaves
/// inserts referencing the root alone); SQLite has a single writer already.
async fn lock_slug_allocation(tx: &Tx) -> Result<()> {
    organizations::Entity::find()
        .filter(organizations::Column::Kind.eq(OrgKind::Root.as_str()))
        .lock(LockType::NoKeyUpdate)
        .one(&**tx)
        .await?;
    Ok(())
}

async fn free_generated_slug<C: sea_orm::ConnectionTrait>(db: &C, base: &Slug) -> Result<Slug> {
    // A suffixed candidate may cut the end of a long base (`with_suffix` keeps slugs
    // within 63 characters), so look up every slug sharing the part no suffix of up to
    // nine characters can cut. Slugs hold no LIKE wildcards.
    let stem: String = base.as_str().chars().take(SUFFIX_STEM_LEN).collect();
    let taken: Vec<String> = organizations::Entity::find()
        .select_only()
        .column(organizations::Column::Slug)
        .filter(organizations::Column::Slug.like(format!("{}%", stem.trim_end_matches('-'))))
        .into_tuple()
        .all(db)
        .await?;
    if !taken.iter().any(|s| s == base.as_str()) {
        return Ok(base.clone());
    }
    let mut n = 2;
    loop {
        let candidate = base.with_suffix(n);
        if !taken.iter().any(|s| s == candidate.as_str()) {
            return Ok(candidate);
        }
        n += 1;
    }
}

async fn slug_taken<C: sea_orm::ConnectionTrait>(db: &C, slug: &str) -> Result<bool> {
    Ok(organizations::Entity::find()
        .filter(organizations::Column::Slug.eq(slug))
        .one(db)
        .await?
        .is_some())
}

fn slug_taken_error(slug: &str) -> Error {
    Error::rejected(
        Code::AlreadyExists,
        "SLUG_TAKEN",
        format!("slug {slug:?} is taken"),
    )
    .with("slug", slug)
}

/// The root organization.
pub async fn root_org<C: sea_orm::ConnectionTrait>(db: &C) -> Result<organizations::Model> {
    organizations::Entity::find()
        .filter(organizations::Column::Kind.eq(OrgKind::Root.as_str()))
        .one(db)
        .await?
        .ok_or_else(|| {
            Error::Internal("the root organization is missing; run the migrations".into())
        })
}

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
    let settings = parse_settings(&mut v, &org_in, currency, true);
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

fn parse_settings(
    v: &mut Violations,
    org_in: &proto::Organization,
    currency: Currency,
    creating: bool,
) -> Settings {
    let _ = creating;
    Settings {
        contact_name: v.check(
            "organization.contact_name",
            text::bounded(&org_in.contact_name, 200).map(|s| s.trim().to_owned()),
        ),
        contact_email: v.check(
            "organization.contact_email",
            text::optional_email(&org_in.contact_email),
        ),
        description: v.check(
            "organization.description",
            text::bounded(&org_in.description, 1000).map(str::to_owned),
        ),
        rate_micros: match &org_in.billing_rate_per_agent {
            Some(m) => parse_rate(v, "organization.billing_rate_per_agent", m, currency),
            None => Some(0),
        },
        plan: if org_in.plan.is_empty() {
            Some("free".to_owned())
        } else {
            parse_plan(v, "organization.plan", &org_in.plan)
        },
        limits: org_in
            .usage_limits
            .as_ref()
            .map(|l| parse_limits(v, "organization.usage_limits", l, currency)),
        alerts: org_in
            .billing_alerts
            .as_ref()
            .map(|a| parse_alerts(v, "organization.billing_alerts", a)),
    }
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
        plan: Set(s.plan.clone().unwrap_or_else(|| "free".to_owned())),
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
        version: Set(1),
    }
    .insert(&*tx)
    .await?;
    let principal = access.principal();
    let mut response = proto::CreateOrganizationResponse {
        organization: Some(convert::organization(&row, 0)),
        ..Default::default()
    };
    if let Some((email, name)) = &new.owner {
        let token = api_key::random_token("ivt_tok_");
        let invitation = invitations::ActiveModel {
            id: Set(new_id()),
            organization_id: Set(id),
            email: Set(email.clone()),
            name: Set(name.clone()),
            role: Set(MemberRole::ConfigAdmin.as_str().to_owned()),
            is_owner: Set(true),
            token_hash: Set(api_key::hash(&token)),
            status: Set("PENDING".to_owned()),
            inviter: Set(principal.actor_id().to_owned()),
            create_time: Set(now),
            expire_time: Set(now
                + i64::try_from(ctx.settings.invitation_ttl.as_micros()).unwrap_or(i64::MAX / 2)),
            accept_time: Set(None),
        }
        .insert(&*tx)
        .await?;
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
            target_id: ids::encode(IdKind::Organization, id),
            request_id: audit_request_id(caller, key),
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

/// GetOrganization.
pub async fn get(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetOrganizationRequest,
) -> Result<proto::GetOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let count = agent_count(ctx.store.db(), access.org().id).await?;
    Ok(proto::GetOrganizationResponse {
        organization: Some(convert::organization(access.org(), count)),
    })
}

const LIST_FIELDS: &[(&str, &[Op])] = &[
    ("status", &[Op::Eq]),
    ("kind", &[Op::Eq]),
    ("parent_id", &[Op::Eq]),
    ("prefix", &[Op::Eq]),
];

#[derive(Debug, FromQueryResult)]
struct AgentCount {
    organization_id: Uuid,
    count: i64,
}

/// ListOrganizations: the organizations the caller may see, filtered and ordered.
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListOrganizationsRequest,
) -> Result<proto::ListOrganizationsResponse> {
    let principal = caller.principal()?.clone();
    let mut v = Violations::new();
    let size = v.check("page_size", paging::page_size(req.page_size));
    let terms = v
        .check("filter", filter::parse(&req.filter, LIST_FIELDS))
        .unwrap_or_default();
    let (by_time, descending) = match req.order_by.trim() {
        "" | "name" | "name asc" => (false, false),
        "name desc" => (false, true),
        "create_time" | "create_time asc" => (true, false),
        "create_time desc" => (true, true),
        _ => {
            v.add(
                "order_by",
                "must be `name` or `create_time`, optionally followed by `desc`",
            );
            (false, false)
        }
    };
    let fingerprint = paging::fingerprint(&[&req.filter, &req.order_by]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let mut query =
        organizations::Entity::find().filter(organizations::Column::DeleteTime.is_null());
    for term in &terms {
        query = match term.field.as_str() {
            "status" => match term.value.parse::<OrgStatus>() {
                Ok(s) => query.filter(organizations::Column::Status.eq(s.as_str())),
                Err(_) => {
                    v.add("filter", "status must be ACTIVE, INACTIVE or CANCELLED");
                    query
                }
            },
            "kind" => match term.value.parse::<OrgKind>() {
                Ok(k) => query.filter(organizations::Column::Kind.eq(k.as_str())),
                Err(_) => {
                    v.add("filter", "kind must be ROOT, AGENCY or TENANT");
                    query
                }
            },
            "parent_id" => match ids::decode(IdKind::Organization, &term.value) {
                Ok(p) => query.filter(organizations::Column::ParentId.eq(p)),
                Err(e) => {
                    v.add("filter", format!("parent_id {e}"));
                    query
                }
            },
            _ => {
                let pattern = format!("{}%", escape_like(&term.value.to_lowercase()));
                query.filter(
                    Condition::any()
                        .add(
                            Expr::expr(Func::lower(Expr::col(organizations::Column::Name)))
                                .like(LikeExpr::new(pattern.clone()).escape('\\')),
                        )
                        .add(
                            Expr::col(organizations::Column::Slug)
                                .like(LikeExpr::new(pattern).escape('\\')),
                        ),
                )
            }
        };
    }
    v.finish()?;
    let size = size.unwrap_or(paging::DEFAULT_PAGE_SIZE);
    // Visibility: operators see everything; an agency admin its agency and tenants;
    // everyone else their own organization.
    if !principal.role.is_operator() {
        let Some(home) = principal.org_id() else {
            return Ok(proto::ListOrganizationsResponse::default());
        };
        query = if principal.role == CallerRole::AgencyAdmin {
            query.filter(
                Condition::any()
                    .add(organizations::Column::Id.eq(home))
                    .add(organizations::Column::ParentId.eq(home)),
            )
        } else {
            query.filter(organizations::Column::Id.eq(home))
        };
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    if let Some(cursor) = &cursor {
        let last_id = Uuid::parse_str(&cursor.id).map_err(|_| {
            Error::invalid("page_token", "is not a page token issued by this service")
        })?;
        let key = cursor.k.clone().unwrap_or_default();
        let (after_key, same_key) = if by_time {
            let t: i64 = key.parse().map_err(|_| {
                Error::invalid("page_token", "is not a page token issued by this service")
            })?;
            if descending {
                (
                    organizations::Column::CreateTime.lt(t),
                    organizations::Column::CreateTime.eq(t),
                )
            } else {
                (
                    organizations::Column::CreateTime.gt(t),
                    organizations::Column::CreateTime.eq(t),
                )
            }
        } else {
            // Names sort case-insensitively, as the database lowercases them, so the
            // key is lowercased by the database too.
            let last_key = || Func::lower(Expr::val(key.clone()));
            let same = folded_name().eq(last_key());
            if descending {
                (folded_name().lt(last_key()), same)
            } else {
                (folded_name().gt(last_key()), same)
            }
        };
        let after_id = if descending {
            organizations::Column::Id.lt(last_id)
        } else {
            organizations::Column::Id.gt(last_id)
        };
        query = query.filter(
            Condition::any()
                .add(after_key)
                .add(Condition::all().add(same_key).add(after_id)),
        );
    }
    query = if by_time {
        query.order_by(organizations::Column::CreateTime, order.clone())
    } else {
        query.order_by(folded_name(), order.clone())
    };
    let mut rows = query
        .order_by(organizations::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let counts: HashMap<Uuid, i64> = agents::Entity::find()
        .select_only()
        .column(agents::Column::OrganizationId)
        .column_as(agents::Column::Id.count(), "count")
        .filter(agents::Column::OrganizationId.is_in(ids))
        .group_by(agents::Column::OrganizationId)
        .into_model::<AgentCount>()
        .all(ctx.store.db())
        .await?
        .into_iter()
        .map(|c| (c.organization_id, c.count))
        .collect();
    let next_page_token = match rows.last() {
        Some(last) if more => paging::encode(&paging::Cursor {
            q: fingerprint,
            k: Some(if by_time {
                last.create_time.to_string()
            } else {
                last.name.clone()
            }),
            id: last.id.to_string(),
        }),
        _ => String::new(),
    };
    Ok(proto::ListOrganizationsResponse {
        organizations: rows
            .iter()
            .map(|r| {
                convert::organization(
                    r,
                    u64::try_from(counts.get(&r.id).copied().unwrap_or(0)).unwrap_or(0),
                )
            })
            .collect(),
        next_page_token,
    })
}

/// The sort key of names: lowercased, so "acme" and "Zeta" sort alphabetically on
/// every backend.
fn folded_name() -> Expr {
    Expr::expr(Func::lower(Expr::col(organizations::Column::Name)))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `\` as the escape character.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Fields of UpdateOrganization's mask that only the organization's managers may set.
const MANAGER_FIELDS: &[&str] = &["billing_rate_per_agent", "currency", "plan", "usage_limits"];
const UPDATABLE: &[&str] = &[
    "name",
    "contact_name",
    "contact_email",
    "description",
    "billing_rate_per_agent",
    "currency",
    "plan",
    "usage_limits",
    "billing_alerts",
];

/// UpdateOrganization.
pub async fn update(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateOrganizationRequest,
) -> Result<proto::UpdateOrganizationResponse> {
    let org_in = req.organization.unwrap_or_default();
    let access = caller
        .authorize(&ctx.store, "organization.id", &org_in.id)
        .await?;
    let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field to update");
    }
    for path in &paths {
        if path == "slug" {
            v.add("update_mask", "slug is immutable after creation");
        } else if !UPDATABLE.contains(&path.as_str()) {
            v.add(
                "update_mask",
                format!(
                    "{path:?} cannot be updated; updatable: {}",
                    UPDATABLE.join(", ")
                ),
            );
        }
    }
    v.finish()?;
    if !access.manages() && paths.iter().any(|p| MANAGER_FIELDS.contains(&p.as_str())) {
        return Err(Error::PermissionDenied(
            "billing terms (rate, currency, plan, usage limits) are set by the organization's agency or an operator".into(),
        ));
    }
    let current = access.org().clone();
    let has = |f: &str| paths.iter().any(|p| p == f);
    let mut v = Violations::new();
    let currency = if has("currency") {
        v.check("organization.currency", org_in.currency.parse::<Currency>())
    } else {
        Some(convert::org_currency(&current))
    }
    .unwrap_or(Currency::Usd);
    let mut row = current.clone().into_active_model();
    let mut changed = serde_json::Map::new();
    if has("name")
        && let Some(name) = v.check("organization.name", text::name(&org_in.name, 100))
    {
        changed.insert("name".into(), json!(name));
        row.name = Set(name);
    }
    if has("contact_name")
        && let Some(value) = v.check(
            "organization.contact_name",
            text::bounded(&org_in.contact_name, 200),
        )
    {
        changed.insert("contact_name".into(), json!(value.trim()));
        row.contact_name = Set(value.trim().to_owned());
    }
    if has("contact_email")
        && let Some(value) = v.check(
            "organization.contact_email",
            text::optional_email(&org_in.contact_email),
        )
    {
        changed.insert("contact_email".into(), json!(value));
        row.contact_email = Set(value);
    }
    if has("description")
        && let Some(value) = v.check(
            "organization.description",
            text::bounded(&org_in.description, 1000),
        )
    {
        changed.insert("description".into(), json!(value));
        row.description = Set(value.to_owned());
    }
    if has("currency") {
        changed.insert("currency".into(), json!(currency.code()));
        row.currency = Set(currency.code().to_owned());
    }
    if has("billing_rate_per_agent") {
        let rate = org_in.billing_rate_per_agent.clone().unwrap_or_default();
        if let Some(micros) = parse_rate(
            &mut v,
            "organization.billing_rate_per_agent",
            &rate,
            currency,
        ) {
            changed.insert("billing_rate_micros".into(), json!(micros));
            row.billing_rate_micros = Set(micros);
        }
    }
    if has("plan")
        && let Some(plan) = parse_plan(&mut v, "organization.plan", &org_in.plan)
    {
        changed.insert("plan".into(), json!(plan));
        row.plan = Set(plan);
    }
    if has("usage_limits") {
        let limits = parse_limits(
            &mut v,
            "organization.usage_limits",
            &org_in.usage_limits.clone().unwrap_or_default(),
            currency,
        );
        changed.insert("usage_limits".into(), json!({
            "spend_limit_micros": limits.spend_limit_micros, "max_agents": limits.max_agents,
            "max_phone_numbers": limits.max_phone_numbers, "max_concurrent_calls": limits.max_concurrent_calls,
        }));
        row.spend_limit_micros = Set(limits.spend_limit_micros);
        row.max_agents = Set(limits.max_agents);
        row.max_phone_numbers = Set(limits.max_phone_numbers);
        row.max_concurrent_calls = Set(limits.max_concurrent_calls);
    }
    if has("billing_alerts") {
        let alerts = parse_alerts(
            &mut v,
            "organization.billing_alerts",
            &org_in.billing_alerts.clone().unwrap_or_default(),
        );
        changed.insert("billing_alerts".into(), json!({
            "thresholds": alerts.thresholds, "emails": alerts.emails, "action": alerts.action.as_str(),
        }));
        row.alert_thresholds = Set(json!(alerts.thresholds).to_string());
        row.alert_emails = Set(json!(alerts.emails).to_string());
        row.alert_action = Set(alerts.action.as_str().to_owned());
    }
    v.finish()?;
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    // The etag is checked against the row as it is under the lock; without an etag the
    // update applies on top of whatever concurrent updates committed first. Only the
    // fields in the mask are written.
    let locked = live_locked(&tx, &current).await?;
    check_etag(&org_in.etag, locked.version)?;
    row.update_time = Set(now);
    row.version = Set(locked.version + 1);
    let updated = save_versioned(&tx, row, current.id, locked.version).await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: current.id,
            action: "UpdateOrganization",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, current.id),
            request_id: &caller.trace_id,
            summary: serde_json::Value::Object(changed),
        },
    )
    .await?;
    tx.commit().await?;
    let count = agent_count(ctx.store.db(), current.id).await?;
    Ok(proto::UpdateOrganizationResponse {
        organization: Some(convert::organization(&updated, count)),
    })
}

/// Locks an organization's row until commit (PostgreSQL `FOR NO KEY UPDATE`, which
/// leaves inserts referencing it alone; SQLite has a single writer) and returns it as
/// it is now.
pub async fn lock_org(tx: &Tx, id: Uuid) -> Result<Option<organizations::Model>> {
    Ok(organizations::Entity::find_by_id(id)
        .lock(LockType::NoKeyUpdate)
        .one(&**tx)
        .await?)
}

/// [`lock_org`] for an organization read earlier, which must still be live.
async fn live_locked(tx: &Tx, org: &organizations::Model) -> Result<organizations::Model> {
    lock_org(tx, org.id)
        .await?
        .filter(|o| o.delete_time.is_none())
        .ok_or_else(|| Error::not_found("organization", &ids::encode(IdKind::Organization, org.id)))
}

/// Writes an organization row only if its version is still `version` (else ABORTED).
pub async fn save_versioned(
    tx: &Tx,
    row: organizations::ActiveModel,
    id: Uuid,
    version: i64,
) -> Result<organizations::Model> {
    let result = organizations::Entity::update_many()
        .set(row)
        .filter(organizations::Column::Id.eq(id))
        .filter(organizations::Column::Version.eq(version))
        .exec(&**tx)
        .await?;
    if result.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    organizations::Entity::find_by_id(id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::not_found("organization", &ids::encode(IdKind::Organization, id)))
}

/// DeleteOrganization: soft delete of an organization without agents or tenants.
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeleteOrganizationRequest,
) -> Result<proto::DeleteOrganizationResponse> {
    let principal = caller.principal()?.clone();
    let key = idempotency_key(&principal, "DeleteOrganization", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = crate::storage::idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let result = delete_once(&ctx, &caller, &principal, &req, key.as_ref()).await;
    // A retry that raced its twin sees the organization already gone (NOT_FOUND) or
    // changed; the twin's stored result is the answer then.
    match (result, &key) {
        (Err(error), Some(key)) => {
            match crate::storage::idempotency::replay(ctx.store.db(), key).await? {
                Some(done) => Ok(done),
                None => Err(error),
            }
        }
        (result, _) => result,
    }
}

async fn delete_once(
    ctx: &Ctx,
    caller: &Caller,
    principal: &crate::auth::Principal,
    req: &proto::DeleteOrganizationRequest,
    key: Option<&crate::storage::idempotency::Key>,
) -> Result<proto::DeleteOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    if access.org().kind == OrgKind::Root.as_str() {
        return Err(Error::precondition(
            "ROOT_ORGANIZATION",
            "the root organization cannot be deleted",
        ));
    }
    let result = async {
        let tx = ctx.store.write().await?;
        // Lock before looking for an earlier result: a concurrent twin holding the lock
        // has committed its result by the time the lock is ours.
        let locked = lock_org(&tx, access.org().id).await?;
        if let Some(done) = replayed(&tx, key).await? {
            return Ok(done);
        }
        let org = locked
            .filter(|o| o.delete_time.is_none())
            .ok_or_else(|| Error::not_found("organization", &req.organization_id))?;
        check_etag(&req.etag, org.version)?;
        let agents_left = agent_count(&*tx, org.id).await?;
        if agents_left > 0 {
            return Err(Error::precondition(
                "ORG_HAS_AGENTS",
                format!("the organization has {agents_left} assigned agents; unassign them first"),
            )
            .with("agent_count", agents_left));
        }
        let tenants = organizations::Entity::find()
            .filter(organizations::Column::ParentId.eq(org.id))
            .filter(organizations::Column::DeleteTime.is_null())
            .all(&*tx)
            .await?
            .len();
        if tenants > 0 {
            return Err(Error::precondition(
                "ORG_HAS_TENANTS",
                format!("the agency has {tenants} tenants; move or delete them first"),
            )
            .with("tenant_count", tenants));
        }
        let now = ctx.store.now();
        let mut row = org.clone().into_active_model();
        row.delete_time = Set(Some(now));
        row.update_time = Set(now);
        row.version = Set(org.version + 1);
        let deleted = save_versioned(&tx, row, org.id, org.version).await?;
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::RevokeTime, Expr::value(now))
            .filter(api_keys::Column::OrganizationId.eq(org.id))
            .filter(api_keys::Column::RevokeTime.is_null())
            .exec(&*tx)
            .await?;
        audit(
            &tx,
            ctx,
            principal,
            AuditRecord {
                organization_id: org.id,
                action: "DeleteOrganization",
                target_type: "organization",
                target_id: ids::encode(IdKind::Organization, org.id),
                request_id: audit_request_id(caller, key),
                summary: json!({ "slug": org.slug, "soft_delete": true }),
            },
        )
        .await?;
        let response = proto::DeleteOrganizationResponse {
            organization: Some(convert::organization(&deleted, 0)),
        };
        commit(ctx, tx, key, response).await
    }
    .await;
    settle(ctx, key, result).await
}

/// CheckSlugAvailability.
pub async fn check_slug(
    ctx: Ctx,
    _caller: Caller,
    req: proto::CheckSlugAvailabilityRequest,
) -> Result<proto::CheckSlugAvailabilityResponse> {
    if req.slug.len() > 200 {
        return Err(Error::invalid("slug", "must be at most 63 characters"));
    }
    match Slug::parse(&req.slug) {
        Err(_) => Ok(proto::CheckSlugAvailabilityResponse {
            available: false,
            reason: "INVALID_SLUG".into(),
            suggestion: free_generated_slug(ctx.store.db(), &Slug::generate(&req.slug))
                .await?
                .to_string(),
        }),
        Ok(slug) => {
            let taken = slug_taken(ctx.store.db(), slug.as_str()).await?;
            Ok(proto::CheckSlugAvailabilityResponse {
                available: !taken,
                reason: if taken {
                    "SLUG_TAKEN".into()
                } else {
                    String::new()
                },
                suggestion: free_generated_slug(ctx.store.db(), &slug)
                    .await?
                    .to_string(),
            })
        }
    }
}

/// CheckOrganizationName.
pub async fn check_name(
    ctx: Ctx,
    _caller: Caller,
    req: proto::CheckOrganizationNameRequest,
) -> Result<proto::CheckOrganizationNameResponse> {
    let name = text::name(&req.name, 100).map_err(|e| Error::invalid("name", e))?;
    let base = Slug::generate(&name);
    let free = free_generated_slug(ctx.store.db(), &base).await?;
    let available = free == base;
    Ok(proto::CheckOrganizationNameResponse {
        available,
        suggested_slug: free.to_string(),
        reason: if available {
            String::new()
        } else {
            "SLUG_TAKEN".into()
        },
    })
}

/// Activates or deactivates an organization; returns the row and the agents changed.
async fn set_status(
    ctx: &Ctx,
    caller: &Caller,
    access: &OrgAccess,
    active: bool,
    reason: &str,
    notify_owner: bool,
    action: &'static str,
) -> Result<(organizations::Model, u64)> {
    if access.org().kind == OrgKind::Root.as_str() {
        return Err(Error::precondition(
            "ROOT_ORGANIZATION",
            "the root organization cannot be deactivated",
        ));
    }
    let tx = ctx.store.write().await?;
    // Decided on the row as it is under the lock, so concurrent switches apply one after
    // the other instead of failing on each other's version.
    let org = live_locked(&tx, access.org()).await?;
    let status: OrgStatus = org.status.parse().unwrap_or(OrgStatus::Inactive);
    if status == OrgStatus::Cancelled {
        return Err(Error::precondition(
            "ACCOUNT_CANCELLED",
            "the account is cancelled; reactivate it with ReactivateAccount",
        ));
    }
    let target = if active {
        OrgStatus::Active
    } else {
        OrgStatus::Inactive
    };
    if status == target {
        return Ok((org, 0));
    }
    let now = ctx.store.now();
    let mut row = org.clone().into_active_model();
    row.status = Set(target.as_str().to_owned());
    row.deactivation_reason = Set(if active {
        String::new()
    } else {
        reason.to_owned()
    });
    row.update_time = Set(now);
    row.version = Set(org.version + 1);
    let updated = save_versioned(&tx, row, org.id, org.version).await?;
    // Deactivation suspends the active agents and marks them, so reactivation restores
    // exactly those and leaves agents suspended for other reasons alone.
    let changed = if active {
        agents::Entity::update_many()
            .col_expr(
                agents::Column::Status,
                Expr::value(AgentStatus::Active.as_str()),
            )
            .col_expr(agents::Column::SuspendedByOrg, Expr::value(false))
            .col_expr(agents::Column::UpdateTime, Expr::value(now))
            .col_expr(
                agents::Column::Version,
                Expr::col(agents::Column::Version).add(1),
            )
            .filter(agents::Column::OrganizationId.eq(org.id))
            .filter(agents::Column::SuspendedByOrg.eq(true))
            .exec(&*tx)
            .await?
            .rows_affected
    } else {
        agents::Entity::update_many()
            .col_expr(
                agents::Column::Status,
                Expr::value(AgentStatus::Suspended.as_str()),
            )
            .col_expr(agents::Column::SuspendedByOrg, Expr::value(true))
            .col_expr(agents::Column::UpdateTime, Expr::value(now))
            .col_expr(
                agents::Column::Version,
                Expr::col(agents::Column::Version).add(1),
            )
            .filter(agents::Column::OrganizationId.eq(org.id))
            .filter(agents::Column::Status.eq(AgentStatus::Active.as_str()))
            .exec(&*tx)
            .await?
            .rows_affected
    };
    audit(
        &tx,
        ctx,
        access.principal(),
        AuditRecord {
            organization_id: org.id,
            action,
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, org.id),
            request_id: &caller.trace_id,
            summary: json!({
                "status": target.as_str(),
                "reason": reason,
                "notify_owner": notify_owner,
                if active { "restored_agents" } else { "suspended_agents" }: changed,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((updated, changed))
}

async fn org_response(ctx: &Ctx, org: &organizations::Model) -> Result<proto::Organization> {
    Ok(convert::organization(
        org,
        agent_count(ctx.store.db(), org.id).await?,
    ))
}

fn reason_of(v: &mut Violations, reason: &str, required: bool) -> String {
    let trimmed = reason.trim();
    if required && trimmed.is_empty() {
        v.add("reason", "must not be empty");
    }
    v.check("reason", text::bounded(trimmed, 500).map(str::to_owned))
        .unwrap_or_default()
}

/// SetOrganizationActive.
pub async fn set_active(
    ctx: Ctx,
    caller: Caller,
    req: proto::SetOrganizationActiveRequest,
) -> Result<proto::SetOrganizationActiveResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let reason = reason_of(&mut v, &req.reason, false);
    v.finish()?;
    let (org, _) = set_status(
        &ctx,
        &caller,
        &access,
        req.active,
        &reason,
        false,
        "SetOrganizationActive",
    )
    .await?;
    Ok(proto::SetOrganizationActiveResponse {
        organization: Some(org_response(&ctx, &org).await?),
    })
}

/// ToggleOrganizationActive.
pub async fn toggle_active(
    ctx: Ctx,
    caller: Caller,
    req: proto::ToggleOrganizationActiveRequest,
) -> Result<proto::ToggleOrganizationActiveResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let active = access.org().status != OrgStatus::Active.as_str();
    let (org, _) = set_status(
        &ctx,
        &caller,
        &access,
        active,
        "",
        false,
        "ToggleOrganizationActive",
    )
    .await?;
    Ok(proto::ToggleOrganizationActiveResponse {
        organization: Some(org_response(&ctx, &org).await?),
    })
}

/// DeactivateOrganization.
pub async fn deactivate(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeactivateOrganizationRequest,
) -> Result<proto::DeactivateOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let reason = reason_of(&mut v, &req.reason, true);
    v.finish()?;
    let (org, suspended) = set_status(
        &ctx,
        &caller,
        &access,
        false,
        &reason,
        req.notify_owner,
        "DeactivateOrganization",
    )
    .await?;
    Ok(proto::DeactivateOrganizationResponse {
        organization: Some(org_response(&ctx, &org).await?),
        suspended_agents: i32::try_from(suspended).unwrap_or(i32::MAX),
    })
}

/// ReactivateOrganization.
pub async fn reactivate(
    ctx: Ctx,
    caller: Caller,
    req: proto::ReactivateOrganizationRequest,
) -> Result<proto::ReactivateOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let (org, restored) = set_status(
        &ctx,
        &caller,
        &access,
        true,
        "",
        false,
        "ReactivateOrganization",
    )
    .await?;
    Ok(proto::ReactivateOrganizationResponse {
        organization: Some(org_response(&ctx, &org).await?),
        restored_agents: i32::try_from(restored).unwrap_or(i32::MAX),
    })
}

/// RegenerateApiKey: issues a new key and revokes the previous one in the same
/// transaction, so the old key stops working at once.
pub async fn regenerate_api_key(
    ctx: Ctx,
    caller: Caller,
    req: proto::RegenerateApiKeyRequest,
) -> Result<proto::RegenerateApiKeyResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org_id = access.org().id;
    let key = api_key::generate();
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    let revoked = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokeTime, Expr::value(now))
        .filter(api_keys::Column::OrganizationId.eq(org_id))
        .filter(api_keys::Column::RevokeTime.is_null())
        .exec(&*tx)
        .await?
        .rows_affected;
    let id = new_id();
    api_keys::ActiveModel {
        id: Set(id),
        organization_id: Set(org_id),
        key_hash: Set(key.hash.clone()),
        prefix: Set(key.prefix.clone()),
        create_time: Set(now),
        revoke_time: Set(None),
    }
    .insert(&*tx)
    .await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: org_id,
            action: "RegenerateApiKey",
            target_type: "api_key",
            target_id: ids::encode(IdKind::ApiKey, id),
            request_id: &caller.trace_id,
            summary: json!({ "prefix": key.prefix, "revoked_keys": revoked }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::RegenerateApiKeyResponse {
        api_key: key.secret,
        api_key_prefix: key.prefix,
        create_time: convert::timestamp(now),
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
        let mut parent_id = None;
        if let Some(approval) = &approval {
            crate::service::signups::consume(&tx, approval).await?;
            let issuer = organizations::Entity::find_by_id(approval.organization_id)
                .one(&*tx)
                .await?;
            if let Some(issuer) =
                issuer.filter(|o| o.kind == OrgKind::Agency.as_str() && o.delete_time.is_none())
            {
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
            plan: Set("free".to_owned()),
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
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: id,
                action: "RegisterOrganization",
                target_type: "organization",
                target_id: ids::encode(IdKind::Organization, id),
                request_id: audit_request_id(&caller, key.as_ref()),
                summary: json!({
                    "name": row.name, "slug": row.slug,
                    "parent_id": parent_id.map(|p| ids::encode(IdKind::Organization, p)),
                    "pre_approval": approval.as_ref().map(|a| ids::encode(IdKind::Signup, a.id)),
                }),
            },
        )
        .await?;
        let response = proto::RegisterOrganizationResponse {
            organization: Some(convert::organization(&row, 0)),
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

/// Loads a live organization by reference without authorization (internal use).
pub async fn load(ctx: &Ctx, reference: &str) -> Result<Option<organizations::Model>> {
    match OrgRef::parse(reference) {
        Some(r) => find_org(&ctx.store, &r).await,
        None => Ok(None),
    }
}
