//! Notification emails: queued in the transaction of their change, sent over SMTP by
//! the dispatcher (or written to the log when no SMTP server is configured).

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, sea_query::Expr};
use uuid::Uuid;

use crate::{
    config::Secret,
    domain::{
        events::{DeliveryStatus, EmailKind},
        ids::{self, IdKind, new_id},
    },
    error::{Error, Result},
    events::lease::{self, Claimed, MAX_ERROR_LEN},
    grpc::Ctx,
    storage::{
        Tx,
        entities::{email_messages, invitations, organizations},
    },
};

/// An email to send.
#[derive(Debug, Clone)]
pub struct Email {
    /// Why it is sent.
    pub kind: EmailKind,
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body. May hold a secret (an invitation token): the row's body is
    /// cleared once sent and never logged.
    pub body: String,
}

/// Queues `email` for `org` inside `tx`, optionally tied to the event it belongs to.
pub async fn queue(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    event_id: Option<Uuid>,
    email: Email,
) -> Result<Uuid> {
    let id = new_id();
    email_messages::ActiveModel {
        id: Set(id),
        organization_id: Set(org.id),
        event_id: Set(event_id),
        kind: Set(email.kind.as_str().to_owned()),
        to_address: Set(email.to.chars().take(320).collect()),
        subject: Set(email.subject.chars().take(300).collect()),
        body: Set(email.body),
        status: Set(DeliveryStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        next_attempt_time: Set(now),
        lease_until: Set(None),
        last_error: Set(String::new()),
        create_time: Set(now),
        update_time: Set(now),
        send_time: Set(None),
    }
    .insert(&**tx)
    .await?;
    tx.note_event();
    Ok(id)
}

/// Queues the invitation email for `invitation` (owner or member) with its `token`.
pub async fn queue_invitation(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    event_id: Option<Uuid>,
    invitation: &invitations::Model,
    token: &str,
) -> Result<Uuid> {
    let (kind, what) = if invitation.is_owner {
        (EmailKind::OwnerInvitation, "the owner of")
    } else {
        (EmailKind::MemberInvitation, "a member of")
    };
    let greeting = if invitation.name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {},", invitation.name)
    };
    let body = format!(
        "{greeting}\n\nYou have been invited to become {what} {org} ({slug}) as {role}.\n\n\
         Accept the invitation with this token (AcceptInvitation):\n\n    {token}\n\n\
         It expires at {expires}.\n",
        org = org.name,
        slug = org.slug,
        role = invitation.role,
        expires = crate::domain::clock::from_micros(invitation.expire_time).to_rfc3339(),
    );
    queue(
        tx,
        now,
        org,
        event_id,
        Email {
            kind,
            to: invitation.email.clone(),
            subject: format!("You are invited to {}", org.name),
            body,
        },
    )
    .await
}

/// Emails handled at the same time.
const CONCURRENCY: usize = 4;

type Transport = AsyncSmtpTransport<Tokio1Executor>;
/// A transport's cache key: the SMTP URL's bytes and the timeout.
type TransportKey = (Vec<u8>, Duration);

/// SMTP transports by URL and timeout, built once (servers in one process — tests —
/// may use different ones).
static TRANSPORTS: LazyLock<Mutex<HashMap<TransportKey, Transport>>> =
    LazyLock::new(Mutex::default);

/// The transport for the configured SMTP URL (lettre syntax: `smtp://host:port`,
/// `smtp://user:pass@host:587?tls=required`, `smtps://…`).
fn transport(url: &Secret, timeout: Duration) -> Result<Transport> {
    let key = (url.expose().to_vec(), timeout);
    let mut cache = TRANSPORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(transport) = cache.get(&key) {
        return Ok(transport.clone());
    }
    let text = std::str::from_utf8(url.expose())
        .map_err(|_| Error::Internal("the SMTP URL is not UTF-8".into()))?;
    // lettre's URL errors name the scheme or the problem, never the credentials.
    let transport = Transport::from_url(text)
        .map_err(|e| Error::Internal(format!("the SMTP URL is not usable: {e}")))?
        .timeout(Some(timeout))
        .build();
    cache.insert(key, transport.clone());
    Ok(transport)
}

/// Sends (or logs) the due emails. Returns how many were handled.
///
/// Each email is claimed by a conditional update (a lease), so dispatchers on several
/// replicas never send one at the same time. Without an SMTP server the email is
/// written to the log (kind, recipient, subject — never the body) and marked `LOGGED`.
/// A sent or logged email's body is cleared, since an invitation's holds its token;
/// failures are retried with backoff like webhooks and end `DEAD` (body cleared too).
pub async fn deliver_due(ctx: &Ctx) -> Result<usize> {
    let due = lease::due_ids::<email_messages::Entity>(&ctx.store, ctx.store.now()).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let settings = &ctx.settings.events;
    let transport = match &settings.smtp_url {
        Some(url) => Some(transport(url, settings.webhook_timeout)?),
        None => None,
    };
    Ok(lease::run_claimed(due, CONCURRENCY, "an email", |id| {
        attempt(ctx, transport.as_ref(), id)
    })
    .await)
}

/// What handling one email came to.
enum Outcome {
    Sent,
    Logged,
    Failed(String),
}

/// Claims, sends (or logs) and records one email. False when another dispatcher had it.
async fn attempt(ctx: &Ctx, transport: Option<&Transport>, id: Uuid) -> Result<bool> {
    let settings = &ctx.settings.events;
    let Some(Claimed { row, lease_until }) =
        lease::claim::<email_messages::Entity>(&ctx.store, id, settings.webhook_timeout).await?
    else {
        return Ok(false);
    };
    let outcome = match transport {
        None => {
            tracing::info!(
                email_id = %ids::encode(IdKind::Email, row.id),
                kind = %row.kind,
                to = %row.to_address,
                subject = %row.subject,
                "no SMTP server configured: email logged, not sent"
            );
            Outcome::Logged
        }
        Some(transport) => send(transport, &settings.smtp_from, &row).await,
    };
    record(ctx, &row, lease_until, outcome).await?;
    Ok(true)
}

/// Sends `row` as a plain-text message.
async fn send(transport: &Transport, from: &Mailbox, row: &email_messages::Model) -> Outcome {
    let to: Mailbox = match row.to_address.parse() {
        Ok(to) => to,
        Err(e) => return Outcome::Failed(format!("bad recipient address: {e}")),
    };
    let message = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(row.subject.as_str())
        .header(ContentType::TEXT_PLAIN)
        .body(row.body.clone());
    let message = match message {
        Ok(message) => message,
        Err(e) => return Outcome::Failed(format!("building the message failed: {e}")),
    };
    match transport.send(message).await {
        Ok(_) => Outcome::Sent,
        Err(e) => Outcome::Failed(e.to_string().chars().take(MAX_ERROR_LEN).collect()),
    }
}

/// Writes the outcome, if this dispatcher's claim still holds.
async fn record(
    ctx: &Ctx,
    row: &email_messages::Model,
    lease_until: i64,
    outcome: Outcome,
) -> Result<()> {
    use email_messages::Column as M;
    let now = ctx.store.now();
    let attempts = row.attempts.saturating_add(1);
    let update = lease::settle::<email_messages::Entity>(row.id, lease_until, now)
        .col_expr(M::Attempts, Expr::value(attempts));
    let done = |update: sea_orm::UpdateMany<email_messages::Entity>, status: DeliveryStatus| {
        update
            .col_expr(M::Status, Expr::value(status.as_str()))
            .col_expr(M::Body, Expr::value(""))
            .col_expr(M::LastError, Expr::value(""))
            .col_expr(M::SendTime, Expr::value(Some(now)))
    };
    let update = match outcome {
        Outcome::Sent => done(update, DeliveryStatus::Delivered),
        Outcome::Logged => done(update, DeliveryStatus::Logged),
        Outcome::Failed(error) => {
            let update = update.col_expr(M::LastError, Expr::value(error.clone()));
            match lease::after_failure(&ctx.settings.events, attempts, now) {
                None => {
                    tracing::warn!(
                        email_id = %ids::encode(IdKind::Email, row.id),
                        kind = %row.kind,
                        attempts,
                        error = %error,
                        "email dead-lettered after its last attempt"
                    );
                    update
                        .col_expr(M::Status, Expr::value(DeliveryStatus::Dead.as_str()))
                        .col_expr(M::Body, Expr::value(""))
                }
                Some(next) => {
                    tracing::info!(
                        email_id = %ids::encode(IdKind::Email, row.id),
                        attempts,
                        error = %error,
                        retry_in_ms = (next - now) / 1_000,
                        "sending an email failed; retrying"
                    );
                    update.col_expr(M::NextAttemptTime, Expr::value(next))
                }
            }
        }
    };
    let tx = ctx.store.write().await?;
    update.exec(&*tx).await?;
    tx.commit().await
}
