//! Pre-approved signups (closed beta): an approved email or a signup code with a number
//! of uses and an optional expiry. `ValidateSignup` answers without consuming; a use is
//! consumed by `RegisterOrganization` in its own transaction, with a conditional update
//! so concurrent signups cannot overspend a code.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend,
    EntityTrait, ExprTrait, Order, QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::Expr,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::{
    auth::Caller,
    domain::{
        ids::{self, IdKind, new_id},
        text,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{audit, audit_request_id, commit, idempotency_key, paging::Page, replayed, settle},
    storage::{Tx, audit::AuditRecord, entities::pre_approved_signups},
};

/// Most uses one pre-approval may grant.
const MAX_USES: i32 = 100_000;

/// What a pre-approval approves.
#[derive(Debug, Clone)]
enum Approved {
    /// One email address, lowercased.
    Email(String),
    /// A signup code, exactly as issued.
    Code(String),
}

/// Checks a signup code: 4 to 64 characters out of `[A-Za-z0-9_-]`.
fn check_code(code: &str) -> Result<(), String> {
    if !(4..=64).contains(&code.len()) {
        return Err("must be 4 to 64 characters".into());
    }
    if !code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("may contain only letters, digits, `_` and `-`".into());
    }
    Ok(())
}

/// Parses the email-or-code pair of a request: exactly one must be set.
fn parse_approved(v: &mut Violations, email: &str, code: &str) -> Option<Approved> {
    let (email, code) = (email.trim(), code.trim());
    match (email.is_empty(), code.is_empty()) {
        (false, true) => v.check("email", text::email(email)).map(Approved::Email),
        (true, false) => v
            .check("code", check_code(code))
            .map(|()| Approved::Code(code.to_owned())),
        _ => {
            v.add("email", "exactly one of email and code must be set");
            v.add("code", "exactly one of email and code must be set");
            None
        }
    }
}

/// Live (not deleted) pre-approvals matching `approved`, oldest first.
fn matching(approved: &Approved) -> sea_orm::Select<pre_approved_signups::Entity> {
    let query = pre_approved_signups::Entity::find()
        .filter(pre_approved_signups::Column::DeleteTime.is_null());
    match approved {
        Approved::Email(email) => {
            query.filter(pre_approved_signups::Column::Email.eq(email.as_str()))
        }
        Approved::Code(code) => query.filter(pre_approved_signups::Column::Code.eq(code.as_str())),
    }
    .order_by(pre_approved_signups::Column::Id, Order::Asc)
}

fn usable(now: i64) -> Condition {
    Condition::all()
        .add(
            Condition::any()
                .add(pre_approved_signups::Column::ExpireTime.is_null())
                .add(pre_approved_signups::Column::ExpireTime.gt(now)),
        )
        .add(
            Expr::col(pre_approved_signups::Column::UseCount)
                .lt(Expr::col(pre_approved_signups::Column::MaxUses)),
        )
}

/// Serializes creators of the same code on PostgreSQL (there is no unique index, since
/// deleted codes may be issued again); SQLite has a single writer anyway.
async fn lock_code(tx: &Tx, code: &str) -> Result<()> {
    if tx.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let mut key = [0u8; 8];
    key.copy_from_slice(
        &Sha256::digest(format!("pre_approved_signups.code:{code}").as_bytes())[..8],
    );
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [i64::from_be_bytes(key).into()],
    ))
    .await?;
    Ok(())
}

/// CreatePreApprovedSignup: approves an email or issues a code (unique among live codes).
pub async fn create(
    ctx: Ctx,
    caller: Caller,
    req: proto::CreatePreApprovedSignupRequest,
) -> Result<proto::CreatePreApprovedSignupResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let approved = parse_approved(&mut v, &req.email, &req.code);
    let max_uses = match req.max_uses {
        0 => 1,
        n if (1..=MAX_USES).contains(&n) => n,
        _ => {
            v.add(
                "max_uses",
                format!("must be between 1 and {MAX_USES} (0 means 1)"),
            );
            1
        }
    };
    let now = ctx.store.now();
    let expire_time = match req.expire_time.as_ref().map(convert::micros) {
        None => None,
        Some(Some(at)) if at > now => Some(at),
        Some(Some(_)) => {
            v.add("expire_time", "must be in the future");
            None
        }
        Some(None) => {
            v.add("expire_time", "is not a valid timestamp");
            None
        }
    };
    v.finish()?;
    let Some(approved) = approved else {
        return Err(Error::Internal("validated email or code missing".into()));
    };
    let key = idempotency_key(&principal, "CreatePreApprovedSignup", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        if let Approved::Code(code) = &approved {
            lock_code(&tx, code).await?;
            if matching(&approved).one(&*tx).await?.is_some() {
                return Err(Error::rejected(
                    Code::AlreadyExists,
                    "SIGNUP_CODE_TAKEN",
                    "this signup code is already in use",
                ));
            }
        }
        let (email, code) = match &approved {
            Approved::Email(email) => (Some(email.clone()), None),
            Approved::Code(code) => (None, Some(code.clone())),
        };
        let id = new_id();
        let row = pre_approved_signups::ActiveModel {
            id: Set(id),
            organization_id: Set(access.org().id),
            email: Set(email.clone()),
            code: Set(code),
            max_uses: Set(max_uses),
            use_count: Set(0),
            expire_time: Set(expire_time),
            create_time: Set(now),
            delete_time: Set(None),
        }
        .insert(&*tx)
        .await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: access.org().id,
                action: "CreatePreApprovedSignup",
                target_type: "pre_approved_signup",
                target_id: ids::encode(IdKind::Signup, id),
                request_id: audit_request_id(&caller, key.as_ref()),
                // The code itself grants access, so it stays out of the log.
                summary: json!({
                    "kind": if email.is_some() { "email" } else { "code" },
                    "email": email, "max_uses": max_uses, "expire_time": expire_time,
                }),
            },
        )
        .await?;
        let response = proto::CreatePreApprovedSignupResponse {
            signup: Some(convert::signup(&row)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// DeletePreApprovedSignup: soft delete; the approval stops working at once.
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeletePreApprovedSignupRequest,
) -> Result<proto::DeletePreApprovedSignupResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let id = ids::decode(IdKind::Signup, &req.signup_id)
        .map_err(|e| Error::invalid("signup_id", e.to_string()))?;
    let not_found = || Error::not_found("pre-approved signup", &req.signup_id);
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    let deleted = pre_approved_signups::Entity::update_many()
        .col_expr(pre_approved_signups::Column::DeleteTime, Expr::value(now))
        .filter(pre_approved_signups::Column::Id.eq(id))
        .filter(pre_approved_signups::Column::OrganizationId.eq(access.org().id))
        .filter(pre_approved_signups::Column::DeleteTime.is_null())
        .exec(&*tx)
        .await?
        .rows_affected;
    if deleted != 1 {
        return Err(not_found());
    }
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: access.org().id,
            action: "DeletePreApprovedSignup",
            target_type: "pre_approved_signup",
            target_id: ids::encode(IdKind::Signup, id),
            request_id: &caller.trace_id,
            summary: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::DeletePreApprovedSignupResponse {})
}

/// ListPreApprovedSignups: the organization's live pre-approvals, oldest first.
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListPreApprovedSignupsRequest,
) -> Result<proto::ListPreApprovedSignupsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let page = Page::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        &[&access.org().id.to_string(), "signups"],
    );
    v.finish()?;
    let mut query = pre_approved_signups::Entity::find()
        .filter(pre_approved_signups::Column::OrganizationId.eq(access.org().id))
        .filter(pre_approved_signups::Column::DeleteTime.is_null());
    if let Some(after) = page.after {
        query = query.filter(pre_approved_signups::Column::Id.gt(after));
    }
    let mut rows = query
        .order_by(pre_approved_signups::Column::Id, Order::Asc)
        .limit(page.limit())
        .all(ctx.store.db())
        .await?;
    let next_page_token = page.finish(&mut rows, |r| r.id);
    Ok(proto::ListPreApprovedSignupsResponse {
        signups: rows.iter().map(convert::signup).collect(),
        next_page_token,
    })
}

/// ValidateSignup: public (rate limited by the auth layer; there may be no caller).
/// Answers whether a signup with the email or code would be accepted, without
/// consuming a use.
pub async fn validate(
    ctx: Ctx,
    _caller: Caller,
    req: proto::ValidateSignupRequest,
) -> Result<proto::ValidateSignupResponse> {
    let mut v = Violations::new();
    let approved = parse_approved(&mut v, &req.email, &req.code);
    v.finish()?;
    let Some(approved) = approved else {
        return Err(Error::Internal("validated email or code missing".into()));
    };
    let rows = matching(&approved).limit(100).all(ctx.store.db()).await?;
    let now = ctx.store.now();
    let expired = |r: &pre_approved_signups::Model| r.expire_time.is_some_and(|at| at <= now);
    let remaining: i64 = rows
        .iter()
        .filter(|r| !expired(r))
        .map(|r| i64::from(std::cmp::max(r.max_uses.saturating_sub(r.use_count), 0)))
        .sum();
    let (valid, reason) = if remaining > 0 {
        (true, "")
    } else if rows.is_empty() {
        (false, "NOT_APPROVED")
    } else if rows.iter().any(|r| expired(r) && r.use_count < r.max_uses) {
        (false, "EXPIRED")
    } else {
        (false, "EXHAUSTED")
    };
    Ok(proto::ValidateSignupResponse {
        valid,
        reason: reason.to_owned(),
        remaining_uses: i32::try_from(remaining).unwrap_or(i32::MAX),
    })
}

/// The live pre-approval matching `code` (when non-empty) or else `email`, that is not
/// expired at `now` and has uses left; the oldest when several match.
pub async fn find_valid<C: ConnectionTrait>(
    db: &C,
    email: &str,
    code: &str,
    now: i64,
) -> Result<Option<pre_approved_signups::Model>> {
    let code = code.trim();
    let email = email.trim().to_lowercase();
    let approved = match (code.is_empty(), email.is_empty()) {
        (false, _) => Approved::Code(code.to_owned()),
        (true, false) => Approved::Email(email),
        (true, true) => return Ok(None),
    };
    Ok(matching(&approved).filter(usable(now)).one(db).await?)
}

/// Consumes one use of `approval` with a conditional update; fails with
/// `SIGNUP_EXHAUSTED` when a concurrent signup took the last use (or it was deleted).
pub async fn consume(tx: &Tx, approval: &pre_approved_signups::Model) -> Result<()> {
    let updated = pre_approved_signups::Entity::update_many()
        .col_expr(
            pre_approved_signups::Column::UseCount,
            Expr::col(pre_approved_signups::Column::UseCount).add(1),
        )
        .filter(pre_approved_signups::Column::Id.eq(approval.id))
        .filter(pre_approved_signups::Column::DeleteTime.is_null())
        .filter(
            Expr::col(pre_approved_signups::Column::UseCount)
                .lt(Expr::col(pre_approved_signups::Column::MaxUses)),
        )
        .exec(&**tx)
        .await?
        .rows_affected;
    if updated != 1 {
        return Err(Error::precondition(
            "SIGNUP_EXHAUSTED",
            "this pre-approval has no uses left",
        ));
    }
    Ok(())
}
