//! CREDITS: a paired TRANSFER_OUT (source) and TRANSFER_IN (target), each naming the
//! other organization and the other entry. Both ledgers must be in one currency; the
//! debit must fit the source's balance and the configured overdraft.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use crate::{
    domain::{
        billing::TxnKind,
        ids::{self, IdKind},
    },
    error::{Error, Result},
    proto::TransferMode,
    service::billing::ledger::{self, Entry},
    storage::entities::credit_transactions,
};

use super::{
    apply::{Report, Run, mode_not_supported},
    request::Item,
};

/// Moves the item's amount from the source's ledger to the target's.
pub(super) async fn apply(run: &Run<'_>, item: &Item, report: &mut Report) -> Result<()> {
    if item.mode != TransferMode::Move {
        return report.refuse(item, "", mode_not_supported(item));
    }
    let (source, target) = (&run.source, &run.target);
    if source.currency != target.currency {
        let error = Error::precondition(
            "CURRENCY_MISMATCH",
            format!(
                "credits cannot move from a {} ledger to a {} ledger",
                source.currency, target.currency
            ),
        )
        .with("source_currency", &source.currency)
        .with("target_currency", &target.currency);
        return report.refuse(item, "", error);
    }
    // Billing accounts are locked in the same order as the organizations: lower id first.
    let (mut source_account, mut target_account) = if source.id < target.id {
        let s = ledger::lock_account(run.tx, source, run.now).await?;
        (s, ledger::lock_account(run.tx, target, run.now).await?)
    } else {
        let t = ledger::lock_account(run.tx, target, run.now).await?;
        (ledger::lock_account(run.tx, source, run.now).await?, t)
    };
    let transfer = ids::encode(IdKind::AssetTransfer, run.transfer_id);
    let reason = if run.reason.is_empty() {
        format!("asset transfer {transfer}")
    } else {
        format!("asset transfer {transfer}: {}", run.reason)
    };
    let entry = |kind, amount_micros, counterparty| Entry {
        kind: Some(kind),
        amount_micros,
        reason: reason.clone(),
        request_id: run.request_id.to_owned(),
        author: run.principal.author(),
        counterparty_organization_id: Some(counterparty),
        ..Entry::default()
    };
    let overdraft = run.ctx.settings.billing.credit_overdraft_micros;
    let debit = ledger::post(
        run.tx,
        &mut source_account,
        entry(TxnKind::TransferOut, -item.credit_micros, target.id),
        overdraft,
        run.now,
    )
    .await;
    let debit = match debit {
        Ok(debit) => debit,
        Err(error) => return report.refuse(item, "", error),
    };
    let credit = ledger::post(
        run.tx,
        &mut target_account,
        Entry {
            related_transaction_id: Some(debit.id),
            ..entry(TxnKind::TransferIn, item.credit_micros, source.id)
        },
        overdraft,
        run.now,
    )
    .await?;
    credit_transactions::Entity::update_many()
        .col_expr(
            credit_transactions::Column::RelatedTransactionId,
            Expr::value(credit.id),
        )
        .filter(credit_transactions::Column::Id.eq(debit.id))
        .exec(&**run.tx)
        .await?;
    report.credited(
        item,
        ids::encode(IdKind::Transaction, debit.id),
        ids::encode(IdKind::Transaction, credit.id),
    );
    Ok(())
}
