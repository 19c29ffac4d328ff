//! Unauthenticated RPCs are rate limited per client address: the TCP peer, never a
//! forwarded-for header; callers with credentials are not counted.

use std::{net::IpAddr, time::Duration};

use tenantry::proto::{self, organization_service_client::OrganizationServiceClient};
use tonic::{Code, Request, Status, transport::Channel};

use crate::{
    helpers::{Backend, TestApp, authed, reason},
    on_both_backends,
};

on_both_backends!(unauthenticated_calls_are_rate_limited_per_address);

fn validate() -> proto::ValidateSignupRequest {
    proto::ValidateSignupRequest {
        email: "ada@example.com".into(),
        ..Default::default()
    }
}

/// Whether a ValidateSignup was refused by the rate limit.
fn limited(result: Result<tonic::Response<proto::ValidateSignupResponse>, Status>) -> bool {
    match result {
        Ok(_) => false,
        Err(status) => {
            let limited = status.code() == Code::ResourceExhausted;
            assert!(!limited || reason(&status) == "RATE_LIMITED", "{status:?}");
            limited
        }
    }
}

async fn unauthenticated_calls_are_rate_limited_per_address(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.public_rate_per_minute = 3).await else {
        return;
    };
    let mut orgs = app.orgs();
    for _ in 0..3 {
        assert!(!limited(orgs.validate_signup(validate()).await), "within");
    }
    let limited_call = orgs
        .validate_signup(validate())
        .await
        .expect_err("over the limit");
    assert_eq!(limited_call.code(), Code::ResourceExhausted);
    assert_eq!(reason(&limited_call), "RATE_LIMITED");
    // Authenticated callers are not affected by the unauthenticated budget.
    let listed = orgs
        .list_organizations(authed(
            proto::ListOrganizationsRequest::default(),
            &app.root(),
        ))
        .await;
    assert!(listed.is_ok());
    app.stop().await;
}

/// A client connecting from `local` (any 127.0.0.0/8 address is loopback on Linux).
async fn client_from(app: &TestApp, local: &str) -> OrganizationServiceClient<Channel> {
    let local: IpAddr = local.parse().expect("address");
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", app.grpc_port))
        .expect("endpoint")
        .local_address(Some(local))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect from another loopback address");
    OrganizationServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_belongs_to_the_peer_address_and_ignores_forwarded_for() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.public_rate_per_minute = 2)
        .await
        .expect("SQLite always runs");
    let mut first = client_from(&app, "127.0.0.1").await;
    for _ in 0..2 {
        assert!(!limited(first.validate_signup(validate()).await));
    }
    assert!(limited(first.validate_signup(validate()).await));
    // A forged X-Forwarded-For does not buy a fresh budget.
    let mut forged = Request::new(validate());
    let header = "198.51.100.7".parse().expect("metadata value");
    forged.metadata_mut().insert("x-forwarded-for", header);
    assert!(limited(first.validate_signup(forged).await));
    // Another address has its own budget, and a new connection from the first does not.
    let mut second = client_from(&app, "127.0.0.2").await;
    assert!(!limited(second.validate_signup(validate()).await));
    let mut again = client_from(&app, "127.0.0.1").await;
    assert!(limited(again.validate_signup(validate()).await));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_with_credentials_are_not_counted_against_the_budget() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.public_rate_per_minute = 2)
        .await
        .expect("SQLite always runs");
    let mut orgs = app.orgs();
    let root = app.root();
    // Authenticated calls to the public RPC, more than the budget: none counted.
    for _ in 0..5 {
        assert!(!limited(
            orgs.validate_signup(authed(validate(), &root)).await
        ));
    }
    for _ in 0..2 {
        assert!(!limited(orgs.validate_signup(validate()).await));
    }
    assert!(limited(orgs.validate_signup(validate()).await));
    // Once the address is limited, authenticated calls still pass.
    assert!(!limited(
        orgs.validate_signup(authed(validate(), &root)).await
    ));
    app.stop().await;
}
