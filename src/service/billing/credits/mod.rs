//! The credits ledger RPCs and payments: balance, transactions, gifts and credits,
//! purchases through a payment gateway and their exactly-once completion.

pub mod completion;
pub mod purchase;
pub mod read;

pub use purchase::{buy_credits, complete_payment, confirm_manual, confirm_manual_payment};
pub use read::{get_transaction, list_transactions};

use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        billing::TxnKind,
        ids::{self, IdKind},
        money::Money,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id, commit, idempotency_key, orgs::lock_live, replayed, settle,
    },
    storage::audit::AuditRecord,
};

use super::{
    Sign,
    ledger::{self, Entry},
    money_in, require_reason, require_request_id,
};

/// GetBalance: the sum of succeeded entries, pending purchases and the overdraft.
pub async fn get_balance(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetBalanceRequest,
) -> Result<proto::GetBalanceResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let currency = convert::org_currency(org);
    let money = |m| Some(convert::money(Money::from_micros(currency, m)));
    let db = ctx.store.db();
    Ok(proto::GetBalanceResponse {
        balance: money(ledger::balance_micros(db, org.id).await?),
        pending: money(ledger::pending_micros(db, org.id).await?),
        overdraft_limit: money(ctx.settings.billing.credit_overdraft_micros),
    })
}

/// An operator's grant: GIFT from GiftCredits, CREDIT or REFUND from AddCredit.
struct Grant<'a> {
    method: &'static str,
    kind: TxnKind,
    organization_id: &'a str,
    amount: Option<&'a proto::Money>,
    reason: &'a str,
    refunded_reference_id: &'a str,
    request_id: &'a str,
}

/// Appends a positive operator entry with its audit entry, idempotently; returns the
/// entry and the balance after it.
async fn grant<M: prost::Message>(
    ctx: &Ctx,
    caller: &Caller,
    grant: Grant<'_>,
    request: &M,
) -> Result<(proto::CreditTransaction, proto::Money)> {
    let access = caller
        .authorize(&ctx.store, "organization_id", grant.organization_id)
        .await?;
    let org = access.org().clone();
    let currency = convert::org_currency(&org);
    let mut v = Violations::new();
    let amount = money_in(&mut v, "amount", grant.amount, currency, 6, Sign::Positive);
    let reason = require_reason(&mut v, "reason", grant.reason, 500);
    require_request_id(&mut v, grant.request_id);
    if grant.refunded_reference_id.chars().count() > 64 {
        v.add("refunded_reference_id", "must be at most 64 characters");
    }
    v.finish()?;
    let amount = amount.unwrap_or_default();
    let principal = access.principal().clone();
    let key = idempotency_key(&principal, grant.method, grant.request_id, request)?;
    // The stored response is a GiftCreditsResponse-shaped pair; both RPCs share it.
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed::<proto::GiftCreditsResponse>(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        lock_live(&tx, &org).await?;
        let now = ctx.store.now();
        let mut account = ledger::lock_account(&tx, &org, now).await?;
        let request_id = audit_request_id(caller, key.as_ref()).to_owned();
        let reason_text = if grant.refunded_reference_id.is_empty() {
            reason.clone()
        } else {
            format!("{reason} (refund of {})", grant.refunded_reference_id)
        };
        let row = ledger::post(
            &tx,
            &mut account,
            Entry {
                kind: Some(grant.kind),
                amount_micros: amount,
                reason: reason_text,
                request_id: request_id.clone(),
                author: principal.author(),
                ..Entry::default()
            },
            ctx.settings.billing.credit_overdraft_micros,
            now,
        )
        .await?;
        let shown = Money::from_micros(currency, amount).amount_string();
        audit(
            &tx,
            ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: grant.method,
                target_type: "credit_transaction",
                target_id: ids::encode(IdKind::Transaction, row.id),
                request_id: &request_id,
                summary: json!({
                    "type": grant.kind.as_str(),
                    "amount": shown,
                    "currency": currency.code(),
                    "reason": reason,
                    "refunded_reference_id": grant.refunded_reference_id,
                    "balance_after": Money::from_micros(currency, account.balance_micros).amount_string(),
                }),
            },
        )
        .await?;
        let response = proto::GiftCreditsResponse {
            transaction: Some(ledger::to_proto(&row)),
            balance: Some(convert::money(Money::from_micros(
                currency,
                account.balance_micros,
            ))),
        };
        commit(ctx, tx, key.as_ref(), response).await
    }
    .await;
    let done = settle(ctx, key.as_ref(), result).await?;
    match (done.transaction, done.balance) {
        (Some(t), Some(b)) => Ok((t, b)),
        _ => Err(Error::Internal(
            "stored grant response is incomplete".into(),
        )),
    }
}

/// GiftCredits: promotional credits (ROOT_ADMIN); reason and request_id required.
pub async fn gift_credits(
    ctx: Ctx,
    caller: Caller,
    req: proto::GiftCreditsRequest,
) -> Result<proto::GiftCreditsResponse> {
    let (transaction, balance) = grant(
        &ctx,
        &caller,
        Grant {
            method: "GiftCredits",
            kind: TxnKind::Gift,
            organization_id: &req.organization_id,
            amount: req.amount.as_ref(),
            reason: &req.reason,
            refunded_reference_id: "",
            request_id: &req.request_id,
        },
        &req,
    )
    .await?;
    Ok(proto::GiftCreditsResponse {
        transaction: Some(transaction),
        balance: Some(balance),
    })
}

/// AddCredit: a CREDIT (default) or REFUND entry (ROOT_ADMIN); reason and request_id
/// required.
pub async fn add_credit(
    ctx: Ctx,
    caller: Caller,
    req: proto::AddCreditRequest,
) -> Result<proto::AddCreditResponse> {
    use proto::CreditTransactionType as T;
    let kind = match T::try_from(req.r#type) {
        Ok(T::Unspecified | T::Credit) => Some(TxnKind::Credit),
        Ok(T::Refund) => Some(TxnKind::Refund),
        _ => None,
    };
    let Some(kind) = kind else {
        // Authorize first so the policy decides before input is judged.
        caller
            .authorize(&ctx.store, "organization_id", &req.organization_id)
            .await?;
        return Err(Error::invalid("type", "must be CREDIT or REFUND"));
    };
    if kind == TxnKind::Credit && !req.refunded_reference_id.is_empty() {
        caller
            .authorize(&ctx.store, "organization_id", &req.organization_id)
            .await?;
        return Err(Error::invalid(
            "refunded_reference_id",
            "is only allowed with type REFUND",
        ));
    }
    let (transaction, balance) = grant(
        &ctx,
        &caller,
        Grant {
            method: "AddCredit",
            kind,
            organization_id: &req.organization_id,
            amount: req.amount.as_ref(),
            reason: &req.reason,
            refunded_reference_id: &req.refunded_reference_id,
            request_id: &req.request_id,
        },
        &req,
    )
    .await?;
    Ok(proto::AddCreditResponse {
        transaction: Some(transaction),
        balance: Some(balance),
    })
}
