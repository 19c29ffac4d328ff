//! The credits ledger: one `billing_accounts` row per organization holds the balance (and
//! the invoice sequence) and is the row every ledger writer locks; `credit_transactions`
//! is append-only except that a PENDING purchase settles once to SUCCEEDED or FAILED.
//!
//! Invariants, kept inside the caller's transaction:
//! - balance = sum of SUCCEEDED entries (each entry records `balance_after`);
//! - a debit never takes the balance below `-overdraft` (`INSUFFICIENT_CREDITS`);
//! - a PENDING entry changes status at most once, under the account lock.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect, sea_query::LockType,
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    domain::{
        billing::{TxnKind, TxnStatus},
        ids::{self, IdKind, new_id},
        money::{Currency, Money},
    },
    error::{Error, Result},
    grpc::convert,
    proto,
    storage::{
        Tx,
        entities::{billing_accounts, credit_transactions, organizations},
    },
};

/// A new ledger entry. Amounts are signed micro-units of the organization's currency.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// Kind of entry.
    pub kind: Option<TxnKind>,
    /// Signed amount: positive credits the balance, negative debits it.
    pub amount_micros: i64,
    /// Why.
    pub reason: String,
    /// The idempotency key (or trace id) of the call that created it.
    pub request_id: String,
    /// `Principal::author()` of the caller.
    pub author: String,
    /// Gateway name for purchases.
    pub gateway: String,
    /// Gateway intent id for purchases.
    pub payment_intent_id: Option<String>,
    /// Invoice paid.
    pub invoice_id: Option<Uuid>,
    /// Other organization of a transfer.
    pub counterparty_organization_id: Option<Uuid>,
    /// Paired entry of a transfer.
    pub related_transaction_id: Option<Uuid>,
}

/// Locks (creating it on first use) the organization's billing account until commit.
pub async fn lock_account(
    tx: &Tx,
    org: &organizations::Model,
    now: i64,
) -> Result<billing_accounts::Model> {
    billing_accounts::Entity::insert(billing_accounts::ActiveModel {
        organization_id: Set(org.id),
        currency: Set(org.currency.clone()),
        balance_micros: Set(0),
        invoice_seq: Set(0),
        create_time: Set(now),
        update_time: Set(now),
    })
    .on_conflict_do_nothing_on([billing_accounts::Column::OrganizationId])
    .exec(&**tx)
    .await?;
    billing_accounts::Entity::find_by_id(org.id)
        .lock(LockType::Update)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::Internal("billing account vanished under its lock".into()))
}

/// The balance of an organization without locking (zero before its first entry).
pub async fn balance_micros<C: sea_orm::ConnectionTrait>(db: &C, org_id: Uuid) -> Result<i64> {
    Ok(billing_accounts::Entity::find_by_id(org_id)
        .one(db)
        .await?
        .map(|a| a.balance_micros)
        .unwrap_or(0))
}

/// Sum of PENDING purchases (not yet in the balance).
pub async fn pending_micros<C: sea_orm::ConnectionTrait>(db: &C, org_id: Uuid) -> Result<i64> {
    // PostgreSQL sums BIGINT into NUMERIC: cast back so it decodes as i64.
    let sum_expr: sea_orm::sea_query::Expr = sea_orm::sea_query::Func::cast_as(
        sea_orm::sea_query::Func::sum(sea_orm::sea_query::Expr::col(
            credit_transactions::Column::AmountMicros,
        )),
        sea_orm::sea_query::Alias::new("BIGINT"),
    )
    .into();
    let sum: Option<Option<i64>> = credit_transactions::Entity::find()
        .select_only()
        .column_as(sum_expr, "sum")
        .filter(credit_transactions::Column::OrganizationId.eq(org_id))
        .filter(credit_transactions::Column::Status.eq(TxnStatus::Pending.as_str()))
        .into_tuple()
        .one(db)
        .await?;
    Ok(sum.flatten().unwrap_or(0))
}

fn insufficient(account: &billing_accounts::Model, amount_micros: i64, overdraft: i64) -> Error {
    let currency = account.currency.parse().unwrap_or(Currency::Usd);
    let show = |m| Money::from_micros(currency, m).amount_string();
    Error::rejected(
        Code::FailedPrecondition,
        "INSUFFICIENT_CREDITS",
        format!(
            "the balance {} {} does not cover {} {}",
            show(account.balance_micros),
            account.currency,
            show(-amount_micros),
            account.currency
        ),
    )
    .with("balance", show(account.balance_micros))
    .with("required", show(-amount_micros))
    .with("overdraft_limit", show(overdraft))
}

/// Whether a debit of `amount_micros` (negative) fits the balance and overdraft.
pub fn covers(account: &billing_accounts::Model, amount_micros: i64, overdraft: i64) -> bool {
    amount_micros >= 0 || account.balance_micros + amount_micros >= -overdraft
}

async fn save_balance(tx: &Tx, account: &mut billing_accounts::Model, now: i64) -> Result<()> {
    let mut row = account.clone().into_active_model();
    row.balance_micros = Set(account.balance_micros);
    row.update_time = Set(now);
    row.update(&**tx).await?;
    account.update_time = now;
    Ok(())
}

fn new_row(
    account: &billing_accounts::Model,
    entry: Entry,
    status: TxnStatus,
    balance_after: Option<i64>,
    now: i64,
) -> credit_transactions::ActiveModel {
    credit_transactions::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(account.organization_id),
        kind: Set(entry.kind.unwrap_or(TxnKind::Debit).as_str().to_owned()),
        status: Set(status.as_str().to_owned()),
        amount_micros: Set(entry.amount_micros),
        balance_after_micros: Set(balance_after),
        currency: Set(account.currency.clone()),
        reason: Set(entry.reason),
        request_id: Set(entry.request_id),
        author: Set(entry.author),
        gateway: Set(entry.gateway),
        payment_intent_id: Set(entry.payment_intent_id),
        invoice_id: Set(entry.invoice_id),
        counterparty_organization_id: Set(entry.counterparty_organization_id),
        related_transaction_id: Set(entry.related_transaction_id),
        failure_reason: Set(String::new()),
        create_time: Set(now),
        update_time: Set(now),
        version: Set(1),
    }
}

/// Appends a SUCCEEDED entry and applies it to the locked account's balance. A debit
/// that would pass the overdraft fails `INSUFFICIENT_CREDITS` and writes nothing.
pub async fn post(
    tx: &Tx,
    account: &mut billing_accounts::Model,
    entry: Entry,
    overdraft_micros: i64,
    now: i64,
) -> Result<credit_transactions::Model> {
    if !covers(account, entry.amount_micros, overdraft_micros) {
        return Err(insufficient(account, entry.amount_micros, overdraft_micros));
    }
    account.balance_micros += entry.amount_micros;
    save_balance(tx, account, now).await?;
    let row = new_row(
        account,
        entry,
        TxnStatus::Succeeded,
        Some(account.balance_micros),
        now,
    );
    Ok(row.insert(&**tx).await?)
}

/// Appends a PENDING entry (a purchase waiting for its gateway); the balance is unchanged.
pub async fn post_pending(
    tx: &Tx,
    account: &billing_accounts::Model,
    entry: Entry,
    now: i64,
) -> Result<credit_transactions::Model> {
    let row = new_row(account, entry, TxnStatus::Pending, None, now);
    Ok(row.insert(&**tx).await?)
}

/// Re-reads an entry inside the transaction (call after [`lock_account`] so its status
/// is final for the rest of the transaction).
pub async fn reload(tx: &Tx, id: Uuid) -> Result<credit_transactions::Model> {
    credit_transactions::Entity::find_by_id(id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::not_found("transaction", &ids::encode(IdKind::Transaction, id)))
}

/// Settles a PENDING entry as SUCCEEDED and applies it to the locked account. Returns
/// `None` (and changes nothing) when the entry is no longer PENDING: the caller that
/// settled it first did the work.
pub async fn settle(
    tx: &Tx,
    account: &mut billing_accounts::Model,
    entry_id: Uuid,
    now: i64,
) -> Result<Option<credit_transactions::Model>> {
    let current = reload(tx, entry_id).await?;
    if current.status != TxnStatus::Pending.as_str() {
        return Ok(None);
    }
    account.balance_micros += current.amount_micros;
    save_balance(tx, account, now).await?;
    let mut row = current.clone().into_active_model();
    row.status = Set(TxnStatus::Succeeded.as_str().to_owned());
    row.balance_after_micros = Set(Some(account.balance_micros));
    row.update_time = Set(now);
    row.version = Set(current.version + 1);
    Ok(Some(row.update(&**tx).await?))
}

/// Marks a PENDING entry FAILED with a reason; `None` when it is no longer PENDING.
pub async fn fail(
    tx: &Tx,
    entry_id: Uuid,
    failure_reason: &str,
    now: i64,
) -> Result<Option<credit_transactions::Model>> {
    let current = reload(tx, entry_id).await?;
    if current.status != TxnStatus::Pending.as_str() {
        return Ok(None);
    }
    let mut row = current.clone().into_active_model();
    row.status = Set(TxnStatus::Failed.as_str().to_owned());
    row.failure_reason = Set(failure_reason.to_owned());
    row.update_time = Set(now);
    row.version = Set(current.version + 1);
    Ok(Some(row.update(&**tx).await?))
}

/// Takes the next invoice number of the locked account: `(seq, "INV-000042")`.
pub async fn next_invoice_number(
    tx: &Tx,
    account: &mut billing_accounts::Model,
    now: i64,
) -> Result<(i64, String)> {
    account.invoice_seq += 1;
    let mut row = account.clone().into_active_model();
    row.invoice_seq = Set(account.invoice_seq);
    row.update_time = Set(now);
    row.update(&**tx).await?;
    Ok((
        account.invoice_seq,
        format!("INV-{:06}", account.invoice_seq),
    ))
}

/// The proto form of a ledger entry.
pub fn to_proto(row: &credit_transactions::Model) -> proto::CreditTransaction {
    let currency = row.currency.parse().unwrap_or(Currency::Usd);
    let money = |m| convert::money(Money::from_micros(currency, m));
    let kind = row.kind.parse::<TxnKind>().ok();
    let status = row.status.parse::<TxnStatus>().ok();
    proto::CreditTransaction {
        id: ids::encode(IdKind::Transaction, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        r#type: kind.map(txn_kind).unwrap_or_default() as i32,
        status: status.map(txn_status).unwrap_or_default() as i32,
        amount: Some(money(row.amount_micros)),
        balance_after: row.balance_after_micros.map(money),
        reason: row.reason.clone(),
        request_id: row.request_id.clone(),
        author: row.author.clone(),
        gateway: row.gateway.clone(),
        payment_intent_id: row.payment_intent_id.clone().unwrap_or_default(),
        invoice_id: row
            .invoice_id
            .map(|id| ids::encode(IdKind::Invoice, id))
            .unwrap_or_default(),
        counterparty_organization_id: row
            .counterparty_organization_id
            .map(|id| ids::encode(IdKind::Organization, id))
            .unwrap_or_default(),
        related_transaction_id: row
            .related_transaction_id
            .map(|id| ids::encode(IdKind::Transaction, id))
            .unwrap_or_default(),
        failure_reason: row.failure_reason.clone(),
        create_time: convert::timestamp(row.create_time),
        update_time: convert::timestamp(row.update_time),
        etag: convert::etag(row.version),
    }
}

/// The proto enum of an entry kind.
pub fn txn_kind(kind: TxnKind) -> proto::CreditTransactionType {
    use proto::CreditTransactionType as P;
    match kind {
        TxnKind::Purchase => P::Purchase,
        TxnKind::Gift => P::Gift,
        TxnKind::Credit => P::Credit,
        TxnKind::Refund => P::Refund,
        TxnKind::Debit => P::Debit,
        TxnKind::TransferIn => P::TransferIn,
        TxnKind::TransferOut => P::TransferOut,
        TxnKind::InvoicePayment => P::InvoicePayment,
        TxnKind::ServicePurchase => P::ServicePurchase,
    }
}

/// The proto enum of an entry status.
pub fn txn_status(status: TxnStatus) -> proto::CreditTransactionStatus {
    use proto::CreditTransactionStatus as P;
    match status {
        TxnStatus::Pending => P::Pending,
        TxnStatus::Succeeded => P::Succeeded,
        TxnStatus::Failed => P::Failed,
    }
}
