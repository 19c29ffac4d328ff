//! OrganizationService: the seed scenarios.

use tenantry::proto;
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason},
    on_both_backends,
};

on_both_backends!(slugs_follow_the_seed_rules);

async fn slugs_follow_the_seed_rules(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let root = app.root();
    let mut orgs = app.orgs();
    let create = |name: &str, slug: &str| {
        let request = authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization { name: name.into(), slug: slug.into(), ..Default::default() }),
                ..Default::default()
            },
            &root,
        );
        let mut client = orgs.clone();
        async move { client.create_organization(request).await }
    };
    let first = create("AgenticMail", "").await.expect("create").into_inner().organization.unwrap();
    assert_eq!(first.slug, "agenticmail");
    let acme = create("Acme Corp", "").await.expect("create").into_inner().organization.unwrap();
    assert_eq!(acme.slug, "acme-corp");
    let second = create("AgenticMail", "").await.expect("create").into_inner().organization.unwrap();
    assert_eq!(second.slug, "agenticmail-2");
    let taken = create("Other", "acme-corp").await.expect_err("explicit slug taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(reason(&taken), "SLUG_TAKEN");
    let fetched = orgs
        .get_organization(authed(proto::GetOrganizationRequest { organization_id: "acme-corp".into() }, &root))
        .await
        .expect("get by slug")
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(fetched.id, acme.id);
    app.stop().await;
}
