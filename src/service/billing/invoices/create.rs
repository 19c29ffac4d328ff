//! CreateInvoice: a one-off invoice issued by an organization's managers (its agency or
//! operators), optionally paid at once from the organization's credits.

use chrono::Duration;
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        billing::{InvoiceStatus, LineKind, date_start, parse_date},
        clock::from_micros,
        ids::{self, IdKind},
        money::Currency,
    },
    error::{Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id, commit, idempotency_key, orgs::lock_live, replayed, settle,
    },
    storage::audit::AuditRecord,
};

use super::{
    super::{Sign, ledger, money_in, require_request_id},
    issue::{self, NewInvoice, NewLine},
    pay::{self, shown},
};

/// Most lines on a one-off invoice.
const MAX_LINES: usize = 100;
/// Longest line description.
const MAX_DESCRIPTION: usize = 500;
/// Longest memo.
const MAX_MEMO: usize = 1_000;
/// Largest quantity of one line.
const MAX_QUANTITY: i64 = 1_000_000_000;

/// Validates the lines into ONE_OFF lines covering the instant `now`.
fn parse_lines(
    v: &mut Violations,
    lines: &[proto::CreateInvoiceLine],
    currency: Currency,
    now: i64,
) -> Vec<NewLine> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        v.add("lines", format!("must have 1 to {MAX_LINES} lines"));
        return Vec::new();
    }
    let mut parsed = Vec::with_capacity(lines.len());
    let mut total: Option<i64> = Some(0);
    for (i, line) in lines.iter().enumerate() {
        let field = |name: &str| format!("lines[{i}].{name}");
        let description = line.description.trim();
        if description.is_empty() {
            v.add(field("description"), "is required");
        } else if description.chars().count() > MAX_DESCRIPTION {
            v.add(
                field("description"),
                format!("must be at most {MAX_DESCRIPTION} characters"),
            );
        } else if description.chars().any(char::is_control) {
            v.add(field("description"), "must not contain control characters");
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            v.add(field("quantity"), format!("must be 1 to {MAX_QUANTITY}"));
        }
        let unit = money_in(
            v,
            &field("unit_amount"),
            line.unit_amount.as_ref(),
            currency,
            6,
            Sign::Any,
        );
        let Some(unit) = unit.filter(|_| (1..=MAX_QUANTITY).contains(&line.quantity)) else {
            total = None;
            continue;
        };
        match issue::line_amount(line.quantity, unit, currency) {
            Some(amount) => total = total.and_then(|t| t.checked_add(amount)),
            None => {
                v.add(format!("lines[{i}]"), "quantity × unit_amount is too large");
                total = None;
            }
        }
        parsed.push(NewLine {
            description: description.to_owned(),
            kind: LineKind::OneOff,
            quantity: line.quantity,
            unit_amount_micros: unit,
            period_start: now,
            period_end: now,
            plan_id: String::new(),
            agent_id: None,
            service_id: String::new(),
        });
    }
    match total {
        Some(t) if t < 0 => v.add(
            "lines",
            "the total must not be negative (grant a credit with AddCredit instead)",
        ),
        Some(t) if t.abs() > issue::MAX_TOTAL_MICROS => v.add("lines", "the total is too large"),
        _ => {}
    }
    parsed
}

/// Parses an optional due date (not before today, UTC) into its first instant.
fn parse_due(v: &mut Violations, due_date: &str, now: i64) -> Option<i64> {
    if due_date.is_empty() {
        return None;
    }
    let date = v.check("due_date", parse_date(due_date))?;
    let today = from_micros(now).date_naive();
    if date < today {
        v.add("due_date", "must not be before the issue date");
        return None;
    }
    if date > today + Duration::days(3660) {
        v.add("due_date", "must be within ten years");
        return None;
    }
    Some(date_start(date))
}

/// CreateInvoice: issues a one-off invoice (OPEN), paid at once from credits when
/// `pay_from_credits` is set and the balance covers it (otherwise it stays OPEN: not
/// an error). A retry with the same `request_id` returns the same invoice. The policy
/// table admits the organization's managers (operators, and the agency for its
/// tenants); an agency admin may also invoice its own agency, which only moves its own
/// credits.
pub async fn create_invoice(
    ctx: Ctx,
    caller: Caller,
    req: proto::CreateInvoiceRequest,
) -> Result<proto::CreateInvoiceResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org().clone();
    let currency = convert::org_currency(&org);
    let now = ctx.store.now();
    let mut v = Violations::new();
    let lines = parse_lines(&mut v, &req.lines, currency, now);
    let memo = req.memo.trim().to_owned();
    if memo.chars().count() > MAX_MEMO {
        v.add("memo", format!("must be at most {MAX_MEMO} characters"));
    }
    let due_time = parse_due(&mut v, &req.due_date, now);
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let principal = access.principal().clone();
    let key = idempotency_key(&principal, "CreateInvoice", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        let org = lock_live(&tx, &org).await?;
        let mut account = ledger::lock_account(&tx, &org, now).await?;
        // Checked under the account lock, so a concurrent twin's commit is visible.
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
        let draft = NewInvoice {
            subscription_id: None,
            period_start: now,
            period_end: now,
            lines,
            memo,
            due_time,
        };
        let issued = issue::issue(&tx, &ctx, &org, &mut account, draft, &request_id, now).await?;
        let mut invoice = issued.invoice;
        let mut transaction = None;
        if req.pay_from_credits && pay::can_pay_from_credits(&ctx, &account, &invoice) {
            let paid = pay::pay_from_credits(
                &tx,
                &ctx,
                &org,
                &mut account,
                &invoice,
                principal.author(),
                &request_id,
                now,
            )
            .await?;
            invoice = paid.invoice;
            transaction = paid.transaction;
        }
        let money = |m| shown(&invoice.currency, m);
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "CreateInvoice",
                target_type: "invoice",
                target_id: ids::encode(IdKind::Invoice, invoice.id),
                request_id: &request_id,
                summary: json!({
                    "number": invoice.number,
                    "lines": issued.lines.len(),
                    "total": money(invoice.total_micros),
                    "currency": invoice.currency,
                    "status": invoice.status,
                    "due_time": invoice.due_time,
                    "pay_from_credits": req.pay_from_credits,
                    "paid_from_credits": invoice.status == InvoiceStatus::Paid.as_str()
                        && transaction.is_some(),
                    "amount_paid": money(invoice.amount_paid_micros),
                    "transaction_id": transaction
                        .as_ref()
                        .map(|t| ids::encode(IdKind::Transaction, t.id)),
                    "balance_after": money(account.balance_micros),
                }),
            },
        )
        .await?;
        let response = proto::CreateInvoiceResponse {
            invoice: Some(super::to_proto(&invoice, &issued.lines)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}
