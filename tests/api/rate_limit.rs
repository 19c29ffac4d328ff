//! Unauthenticated RPCs are rate limited per client address.

use tenantry::proto;
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, reason},
    on_both_backends,
};

on_both_backends!(unauthenticated_calls_are_rate_limited_per_address);

async fn unauthenticated_calls_are_rate_limited_per_address(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.public_rate_per_minute = 3).await else {
        return;
    };
    let mut orgs = app.orgs();
    let request = || proto::ValidateSignupRequest {
        email: "ada@example.com".into(),
        ..Default::default()
    };
    for _ in 0..3 {
        let status = orgs.validate_signup(request()).await.err();
        assert!(
            status
                .as_ref()
                .is_none_or(|s| s.code() != Code::ResourceExhausted),
            "within the limit: {status:?}"
        );
    }
    let limited = orgs
        .validate_signup(request())
        .await
        .expect_err("over the limit");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(reason(&limited), "RATE_LIMITED");
    // Authenticated callers are not affected by the unauthenticated budget.
    let listed = orgs
        .list_organizations(crate::helpers::authed(
            proto::ListOrganizationsRequest::default(),
            &app.root(),
        ))
        .await;
    assert!(listed.is_ok());
    app.stop().await;
}
