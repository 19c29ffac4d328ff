//! Notification emails over SMTP (a local sink): member and owner invitations with
//! working tokens, deactivation notices, spend alerts; bodies cleared once sent; logged
//! without an SMTP server; retried after a refusal; dead-lettered when the server never
//! answers.

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tenantry::{
    config::{Secret, Settings},
    proto::{self, MemberRole, UsageMetric as M},
    storage::entities::email_messages,
};

use crate::{
    helpers::{Backend, TestApp, authed},
    on_both_backends,
    organizations::{register_agent, tenant, usd},
    sinks::{Mail, SmtpSink, WAIT},
    usage::{event, record, system},
    webhooks::fast,
};

on_both_backends!(
    invitations_are_emailed_with_a_token_that_accepts,
    creating_an_org_with_an_owner_sends_the_owner_invitation,
    deactivating_with_notify_owner_emails_the_owner,
    crossing_a_spend_threshold_emails_the_alert_addresses,
    without_smtp_emails_are_logged_and_their_bodies_cleared,
    an_email_the_server_refuses_once_is_sent_on_retry,
    emails_the_server_never_takes_are_dead_lettered,
);

/// Fast dispatcher rounds, emails sent to `sink`.
fn via(sink: &SmtpSink) -> impl FnOnce(&mut Settings) + use<> {
    let url = sink.url();
    move |s| {
        fast(s);
        s.events.smtp_url = Some(Secret::new(url));
    }
}

/// The email row to `to` of `kind`, once it left PENDING (bounded wait).
async fn handled_email(app: &TestApp, to: &str, kind: &str) -> email_messages::Model {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = email_messages::Entity::find()
            .filter(email_messages::Column::ToAddress.eq(to))
            .filter(email_messages::Column::Kind.eq(kind))
            .all(app.store.db())
            .await
            .expect("read emails");
        if let Some(row) = rows.iter().find(|r| r.status != "PENDING") {
            return row.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} email to {to} was handled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the row of a sent email: delivered once, body gone.
fn assert_sent(row: &email_messages::Model) {
    assert_eq!(row.status, "DELIVERED", "{row:?}");
    assert_eq!(row.attempts, 1);
    assert_eq!(
        row.body, "",
        "the body (maybe a token) is cleared once sent"
    );
    assert!(row.send_time.is_some());
    assert_eq!(row.lease_until, None);
}

/// Checks a message's envelope and headers.
fn assert_addressed(mail: &Mail, to: &str) {
    assert_eq!(mail.from, "no-reply@tenantry.local");
    assert_eq!(mail.recipients, vec![to.to_owned()]);
    assert!(mail.header("To").contains(to), "{}", mail.header("To"));
    assert!(mail.header("Content-Type").starts_with("text/plain"));
}

async fn accept(app: &TestApp, email: &str, token: &str) -> Result<proto::Member, tonic::Status> {
    let user = app.token_for("", "", &format!("user:{email}"), Some(email));
    app.orgs()
        .accept_invitation(authed(
            proto::AcceptInvitationRequest {
                token: token.into(),
                name: String::new(),
            },
            &user,
        ))
        .await
        .map(|r| r.into_inner().member.expect("member"))
}

async fn invitations_are_emailed_with_a_token_that_accepts(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, via(&sink)).await else {
        return;
    };
    let org = tenant(&app, "Inviting", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    app.orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.id.clone(),
                email: "ada@example.com".into(),
                role: MemberRole::Member as i32,
                name: "Ada".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("invite");
    let mail = sink
        .wait_for_mail_to("ada@example.com")
        .await
        .expect("invitation sent");
    assert_addressed(&mail, "ada@example.com");
    assert_eq!(mail.header("Subject"), "You are invited to Inviting");
    let token = mail.word_starting("ivt_tok_").expect("token in the email");
    let member = accept(&app, "ada@example.com", &token)
        .await
        .expect("the emailed token accepts");
    assert_eq!(member.organization_id, org.id);
    assert_eq!(member.role, MemberRole::Member as i32);
    assert_sent(&handled_email(&app, "ada@example.com", "MEMBER_INVITATION").await);
    app.stop().await;
}

async fn creating_an_org_with_an_owner_sends_the_owner_invitation(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, via(&sink)).await else {
        return;
    };
    let created = app
        .orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: "Owned".into(),
                    ..Default::default()
                }),
                owner: Some(proto::OwnerInvite {
                    email: "olu@owned.io".into(),
                    first_name: "Olu".into(),
                    last_name: "Owner".into(),
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create with owner")
        .into_inner();
    let mail = sink
        .wait_for_mail_to("olu@owned.io")
        .await
        .expect("owner invitation sent");
    assert_addressed(&mail, "olu@owned.io");
    assert!(mail.text().contains("Hello Olu Owner,"), "{}", mail.data);
    assert!(mail.text().contains("the owner of Owned"), "{}", mail.data);
    let token = mail.word_starting("ivt_tok_").expect("token in the email");
    assert_eq!(token, created.owner_invitation_token);
    let member = accept(&app, "olu@owned.io", &token)
        .await
        .expect("the emailed owner token accepts");
    assert!(member.owner);
    assert_sent(&handled_email(&app, "olu@owned.io", "OWNER_INVITATION").await);
    app.stop().await;
}

async fn deactivating_with_notify_owner_emails_the_owner(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, via(&sink)).await else {
        return;
    };
    let org = app
        .orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: "Lapsed".into(),
                    ..Default::default()
                }),
                owner: Some(proto::OwnerInvite {
                    email: "lee@lapsed.io".into(),
                    first_name: "Lee".into(),
                    last_name: String::new(),
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create")
        .into_inner()
        .organization
        .expect("organization");
    app.orgs()
        .deactivate_organization(authed(
            proto::DeactivateOrganizationRequest {
                organization_id: org.id.clone(),
                reason: "Non-payment".into(),
                notify_owner: true,
            },
            &app.root(),
        ))
        .await
        .expect("deactivate");
    let row = handled_email(&app, "lee@lapsed.io", "DEACTIVATION_NOTICE").await;
    assert_sent(&row);
    let notices: Vec<Mail> = sink
        .mails()
        .into_iter()
        .filter(|m| m.header("Subject") == "Lapsed has been deactivated")
        .collect();
    assert_eq!(notices.len(), 1, "{:?}", sink.mails());
    assert_addressed(&notices[0], "lee@lapsed.io");
    assert!(notices[0].text().contains("Reason: Non-payment"));
    app.stop().await;
}

async fn crossing_a_spend_threshold_emails_the_alert_addresses(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, via(&sink)).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Spendy", "").await;
    let agent = register_agent(&app, &root, &org.id, "Spender").await;
    app.billing()
        .set_spend_limit(authed(
            proto::SetSpendLimitRequest {
                organization_id: org.id.clone(),
                monthly_spend_limit: Some(usd("10.00")),
                billing_alerts: Some(proto::BillingAlerts {
                    alert_thresholds: vec![50],
                    alert_emails: vec!["billing@spendy.io".into(), "cfo@spendy.io".into()],
                    action_at_100: proto::SpendLimitAction::NotifyOnly as i32,
                }),
                etag: String::new(),
            },
            &root,
        ))
        .await
        .expect("set spend limit");
    record(
        &app,
        &system(&app),
        &org.id,
        event("u1", &agent.id, M::Tokens, 10, "6.00"),
    )
    .await
    .expect("record usage");
    for to in ["billing@spendy.io", "cfo@spendy.io"] {
        let mail = sink.wait_for_mail_to(to).await.expect("alert sent");
        assert_addressed(&mail, to);
        assert_eq!(
            mail.header("Subject"),
            "Spendy: 50 % of the monthly spend limit reached"
        );
        assert!(mail.text().contains("6.00 USD"), "{}", mail.data);
        assert_sent(&handled_email(&app, to, "BILLING_ALERT").await);
    }
    app.stop().await;
}

async fn without_smtp_emails_are_logged_and_their_bodies_cleared(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let org = tenant(&app, "Quiet", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    app.orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.id.clone(),
                email: "bo@example.com".into(),
                role: MemberRole::Member as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("invite");
    let row = handled_email(&app, "bo@example.com", "MEMBER_INVITATION").await;
    assert_eq!(row.status, "LOGGED");
    assert_eq!(row.body, "");
    assert_eq!(row.subject, "You are invited to Quiet");
    assert!(row.send_time.is_some());
    app.stop().await;
}

async fn an_email_the_server_refuses_once_is_sent_on_retry(backend: Backend) {
    let sink = SmtpSink::refusing_first(1).await;
    let Some(app) = TestApp::spawn_with(backend, via(&sink)).await else {
        return;
    };
    let org = tenant(&app, "Patient", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    app.orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.id.clone(),
                email: "di@example.com".into(),
                role: MemberRole::Member as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("invite");
    let mail = sink
        .wait_for_mail_to("di@example.com")
        .await
        .expect("sent on retry");
    assert_addressed(&mail, "di@example.com");
    assert!(
        mail.word_starting("ivt_tok_").is_some(),
        "the body was kept for the retry"
    );
    assert_eq!(sink.refused(), 1, "the first attempt was refused");
    let row = handled_email(&app, "di@example.com", "MEMBER_INVITATION").await;
    assert_eq!(row.status, "DELIVERED", "{row:?}");
    assert_eq!(row.attempts, 2);
    assert_eq!(row.last_error, "", "cleared once sent");
    assert_eq!(row.body, "");
    assert!(row.send_time.is_some());
    assert_eq!(row.lease_until, None);
    assert_eq!(sink.mails().len(), 1, "sent once");
    app.stop().await;
}

async fn emails_the_server_never_takes_are_dead_lettered(backend: Backend) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let Some(app) = TestApp::spawn_with(backend, |s| {
        fast(s);
        s.events.max_attempts = 2;
        s.events.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{closed}")));
    })
    .await
    else {
        return;
    };
    let org = tenant(&app, "Bounced", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    app.orgs()
        .invite_member(authed(
            proto::InviteMemberRequest {
                organization_id: org.id.clone(),
                email: "cy@example.com".into(),
                role: MemberRole::Member as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("invite");
    let row = handled_email(&app, "cy@example.com", "MEMBER_INVITATION").await;
    assert_eq!(row.status, "DEAD", "{row:?}");
    assert_eq!(row.attempts, 2);
    assert_ne!(row.last_error, "");
    assert_eq!(row.body, "", "a dead letter keeps no token");
    assert_eq!(row.send_time, None);
    app.stop().await;
}
