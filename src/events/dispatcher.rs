//! The dispatcher loop each server runs: sequence, deliver, expire — in rounds woken by
//! local commits that wrote events, or on the poll interval (events of other replicas).

use tokio::sync::watch;

use crate::{
    events::{email, outbox, webhooks},
    grpc::Ctx,
    service::transfers::tenants,
};

/// One round: number new events (all of them, batch by batch), then deliver what is
/// due and expire undecided tenant transfers. Failures are logged; the next round
/// retries.
pub async fn round(ctx: &Ctx) {
    loop {
        match outbox::sequence(&ctx.store).await {
            Ok(n) if n >= outbox::BATCH => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "sequencing events failed");
                break;
            }
        }
    }
    if let Err(e) = webhooks::deliver_due(ctx).await {
        tracing::warn!(error = %e, "delivering webhooks failed");
    }
    if let Err(e) = email::deliver_due(ctx).await {
        tracing::warn!(error = %e, "sending emails failed");
    }
    if let Err(e) = tenants::expire_due(ctx).await {
        tracing::warn!(error = %e, "expiring tenant transfers failed");
    }
}

/// Runs rounds until `stop` turns true.
pub async fn run(ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let poll = ctx.settings.events.poll_interval;
    let signals = ctx.store.signals().clone();
    loop {
        tokio::select! {
            _ = round(&ctx) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = signals.new_events.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
