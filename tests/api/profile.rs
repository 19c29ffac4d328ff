//! Profile and addresses: company record, owner, address book CRUD and bad input.

use prost_types::FieldMask;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tenantry::{
    proto::{self, AddressType},
    storage::entities::{addresses, members, organizations},
};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
};

on_both_backends!(
    the_profile_shows_and_updates_the_company_record,
    bad_profile_input_names_every_field_and_writes_nothing,
    the_owner_profile_updates_the_org_and_the_membership,
    addresses_are_created_listed_updated_and_deleted,
    bad_addresses_name_every_field_and_write_nothing,
    addresses_of_another_org_are_not_found,
    the_address_book_holds_at_most_fifty,
);

async fn tenant(app: &TestApp, name: &str) -> proto::Organization {
    app.orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: name.into(),
                    description: "Agents for mail".into(),
                    contact_name: "Cara Contact".into(),
                    contact_email: "cara@example.com".into(),
                    ..Default::default()
                }),
                owner: Some(proto::OwnerInvite {
                    email: "owner@example.com".into(),
                    first_name: "Ola".into(),
                    last_name: String::new(),
                }),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("create tenant")
        .into_inner()
        .organization
        .expect("organization")
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn address(kind: AddressType, city: &str) -> proto::Address {
    proto::Address {
        r#type: kind as i32,
        line1: "1 Marina Road".into(),
        city: city.into(),
        country: "NG".into(),
        postal_code: "101001".into(),
        ..Default::default()
    }
}

async fn create_address(
    app: &TestApp,
    admin: &str,
    org: &str,
    address: proto::Address,
) -> Result<proto::Address, tonic::Status> {
    app.orgs()
        .create_address(authed(
            proto::CreateAddressRequest {
                organization_id: org.into(),
                address: Some(address),
                request_id: String::new(),
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner().address.expect("address"))
}

async fn list_addresses(
    app: &TestApp,
    token: &str,
    org: &str,
    kind: AddressType,
) -> Vec<proto::Address> {
    app.orgs()
        .list_addresses(authed(
            proto::ListAddressesRequest {
                organization_id: org.into(),
                r#type: kind as i32,
            },
            token,
        ))
        .await
        .expect("list addresses")
        .into_inner()
        .addresses
}

async fn address_rows(app: &TestApp) -> u64 {
    addresses::Entity::find()
        .count(app.store.db())
        .await
        .expect("count")
}

async fn the_profile_shows_and_updates_the_company_record(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "AgenticMail").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let profile = app
        .orgs()
        .get_organization_profile(authed(
            proto::GetOrganizationProfileRequest {
                organization_id: org.id.clone(),
            },
            &app.token("MEMBER", &org.id),
        ))
        .await
        .expect("get profile")
        .into_inner();
    let company = profile.company.expect("company");
    assert_eq!(company.display_name, "AgenticMail");
    assert_eq!(company.description, "Agents for mail");
    assert_eq!(company.contact_name, "Cara Contact");
    assert!(company.interests.is_empty());
    assert_eq!(profile.owner.expect("owner").email, "owner@example.com");
    assert_eq!(profile.etag, org.etag);

    let update = |company: proto::CompanyProfile, paths: &[&str], etag: &str| {
        let request = authed(
            proto::UpdateOrganizationProfileRequest {
                organization_id: org.id.clone(),
                company: Some(company),
                update_mask: mask(paths),
                etag: etag.into(),
            },
            &admin,
        );
        let mut client = app.orgs();
        async move {
            client
                .update_organization_profile(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    let updated = update(
        proto::CompanyProfile {
            display_name: "Agentic Mail".into(),
            contact_email: "Hello@AgenticMail.com".into(),
            interests: vec!["email".into(), " ai ".into(), "email".into()],
            description: "ignored: not in the mask".into(),
            ..Default::default()
        },
        &["display_name", "contact_email", "interests"],
        &profile.etag,
    )
    .await
    .expect("update profile");
    let company = updated.company.expect("company");
    assert_eq!(company.display_name, "Agentic Mail");
    assert_eq!(company.contact_email, "hello@agenticmail.com");
    assert_eq!(company.interests, vec!["email", "ai"]);
    assert_eq!(company.description, "Agents for mail");
    assert_ne!(updated.etag, profile.etag);

    let row = organizations::Entity::find()
        .filter(organizations::Column::Slug.eq("agenticmail"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("org");
    assert_eq!(row.name, "Agentic Mail");
    assert_eq!(row.slug, "agenticmail", "the slug never changes");
    assert_eq!(row.interests, r#"["email","ai"]"#);

    let stale = update(
        proto::CompanyProfile {
            description: "x".into(),
            ..Default::default()
        },
        &["description"],
        &profile.etag,
    )
    .await
    .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    let by_member = app
        .orgs()
        .update_organization_profile(authed(
            proto::UpdateOrganizationProfileRequest {
                organization_id: org.id.clone(),
                company: Some(proto::CompanyProfile {
                    description: "x".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["description"]),
                etag: String::new(),
            },
            &app.token("MEMBER", &org.id),
        ))
        .await
        .expect_err("members cannot update");
    assert_eq!(by_member.code(), Code::PermissionDenied);
    app.stop().await;
}

async fn bad_profile_input_names_every_field_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let update = |company: proto::CompanyProfile, paths: &[&str]| {
        let request = authed(
            proto::UpdateOrganizationProfileRequest {
                organization_id: org.id.clone(),
                company: Some(company),
                update_mask: mask(paths),
                etag: String::new(),
            },
            &admin,
        );
        let mut client = app.orgs();
        async move {
            client
                .update_organization_profile(request)
                .await
                .expect_err("bad input")
        }
    };
    let bad = update(
        proto::CompanyProfile {
            display_name: "   ".into(),
            description: "d".repeat(1001),
            contact_email: "not-an-email".into(),
            interests: vec!["fine".into(), "t".repeat(51), String::new()],
            ..Default::default()
        },
        &[
            "display_name",
            "description",
            "contact_email",
            "interests",
            "slug",
        ],
    )
    .await;
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&bad),
        vec![
            "company.display_name",
            "company.description",
            "company.contact_email",
            "company.interests[1]",
            "company.interests[2]",
            "update_mask",
        ]
    );
    let too_many = update(
        proto::CompanyProfile {
            interests: (0..21).map(|i| format!("tag{i}")).collect(),
            ..Default::default()
        },
        &["interests"],
    )
    .await;
    assert_eq!(violations(&too_many), vec!["company.interests"]);
    let empty_mask = update(proto::CompanyProfile::default(), &[]).await;
    assert_eq!(violations(&empty_mask), vec!["update_mask"]);
    let row = organizations::Entity::find()
        .filter(organizations::Column::Slug.eq("acme"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("org");
    assert_eq!(row.version, 1);
    assert_eq!(row.name, "Acme");
    assert_eq!(row.interests, "[]");
    app.stop().await;
}

async fn the_owner_profile_updates_the_org_and_the_membership(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.token_for("", "", "founder", Some("founder@example.com"));
    let org = app
        .orgs()
        .register_organization(authed(
            proto::RegisterOrganizationRequest {
                name: "Founded".into(),
                owner_name: "Old Name".into(),
                ..Default::default()
            },
            &user,
        ))
        .await
        .expect("register")
        .into_inner()
        .organization
        .expect("organization");
    let admin = app.token_for(
        "CONFIG_ADMIN",
        &org.id,
        "founder",
        Some("founder@example.com"),
    );
    let update = |org_id: String, name: &str, token: String| {
        let request = authed(
            proto::UpdateOwnerProfileRequest {
                organization_id: org_id,
                name: name.into(),
            },
            &token,
        );
        let mut client = app.orgs();
        async move {
            client
                .update_owner_profile(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    let owner = update(org.id.clone(), "  New Name ", admin.clone())
        .await
        .expect("update owner")
        .owner
        .expect("owner");
    assert_eq!(owner.name, "New Name");
    assert_eq!(owner.user_id, "founder");
    let member = members::Entity::find()
        .filter(members::Column::IsOwner.eq(true))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("owner member");
    assert_eq!(member.name, "New Name");
    let row = organizations::Entity::find()
        .filter(organizations::Column::Slug.eq("founded"))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("org");
    assert_eq!(row.owner_name, "New Name");
    assert_eq!(row.version, 2);

    let empty = update(org.id.clone(), " ", admin)
        .await
        .expect_err("empty name");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(violations(&empty), vec!["name"]);
    let ownerless = app
        .orgs()
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: "Ownerless".into(),
                    ..Default::default()
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
    let missing = update(
        ownerless.id.clone(),
        "Someone",
        app.token("CONFIG_ADMIN", &ownerless.id),
    )
    .await
    .expect_err("no owner");
    assert_eq!(missing.code(), Code::FailedPrecondition);
    assert_eq!(reason(&missing), "OWNER_MISSING");
    app.stop().await;
}

async fn addresses_are_created_listed_updated_and_deleted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let billing = create_address(
        &app,
        &admin,
        &org.id,
        address(AddressType::Billing, "Lagos"),
    )
    .await
    .expect("create billing");
    assert!(billing.id.starts_with("adr_"));
    assert_eq!(billing.country, "NG");
    create_address(
        &app,
        &admin,
        &org.id,
        address(AddressType::Shipping, "Abuja"),
    )
    .await
    .expect("create shipping");

    // Idempotent creation.
    let request = proto::CreateAddressRequest {
        organization_id: org.id.clone(),
        address: Some(address(AddressType::Mailing, "Ibadan")),
        request_id: "addr-1".into(),
    };
    let first = app
        .orgs()
        .create_address(authed(request.clone(), &admin))
        .await
        .expect("create")
        .into_inner();
    let retry = app
        .orgs()
        .create_address(authed(request, &admin))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        first.address.expect("address").id,
        retry.address.expect("address").id
    );
    assert_eq!(address_rows(&app).await, 3);

    let member = app.token("MEMBER", &org.id);
    assert_eq!(
        list_addresses(&app, &member, &org.id, AddressType::Unspecified)
            .await
            .len(),
        3
    );
    let only_billing = list_addresses(&app, &member, &org.id, AddressType::Billing).await;
    assert_eq!(only_billing.len(), 1);
    assert_eq!(only_billing[0].id, billing.id);

    let update = |address: proto::Address, paths: &[&str]| {
        let request = authed(
            proto::UpdateAddressRequest {
                organization_id: org.id.clone(),
                address: Some(address),
                update_mask: mask(paths),
            },
            &admin,
        );
        let mut client = app.orgs();
        async move {
            client
                .update_address(request)
                .await
                .map(|r| r.into_inner().address.expect("address"))
        }
    };
    let moved = update(
        proto::Address {
            id: billing.id.clone(),
            city: "Port Harcourt".into(),
            line2: "Suite 4".into(),
            etag: billing.etag.clone(),
            ..Default::default()
        },
        &["city", "line2"],
    )
    .await
    .expect("update address");
    assert_eq!(moved.city, "Port Harcourt");
    assert_eq!(moved.line2, "Suite 4");
    assert_eq!(moved.line1, "1 Marina Road");
    assert_ne!(moved.etag, billing.etag);
    let stale = update(
        proto::Address {
            id: billing.id.clone(),
            city: "Kano".into(),
            etag: billing.etag.clone(),
            ..Default::default()
        },
        &["city"],
    )
    .await
    .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);

    let delete = |address_id: &str, etag: &str| {
        let request = authed(
            proto::DeleteAddressRequest {
                organization_id: org.id.clone(),
                address_id: address_id.into(),
                etag: etag.into(),
            },
            &admin,
        );
        let mut client = app.orgs();
        async move { client.delete_address(request).await }
    };
    let stale = delete(&billing.id, &billing.etag)
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    delete(&billing.id, &moved.etag).await.expect("delete");
    assert_eq!(address_rows(&app).await, 2);
    let gone = delete(&billing.id, "").await.expect_err("already deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let profile = app
        .orgs()
        .get_organization_profile(authed(
            proto::GetOrganizationProfileRequest {
                organization_id: org.id.clone(),
            },
            &member,
        ))
        .await
        .expect("profile")
        .into_inner();
    assert_eq!(profile.addresses.len(), 2);
    app.stop().await;
}

async fn bad_addresses_name_every_field_and_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let bad = create_address(
        &app,
        &admin,
        &org.id,
        proto::Address {
            r#type: 0,
            line1: " ".into(),
            line2: "l".repeat(201),
            city: String::new(),
            region: "r".repeat(101),
            postal_code: "p".repeat(21),
            country: "ng".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("bad address");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&bad),
        vec![
            "address.type",
            "address.line1",
            "address.line2",
            "address.city",
            "address.region",
            "address.postal_code",
            "address.country"
        ]
    );
    for country in ["NGA", "N", "1A", ""] {
        let mut input = address(AddressType::Billing, "Lagos");
        input.country = country.into();
        let bad = create_address(&app, &admin, &org.id, input)
            .await
            .expect_err("bad country");
        assert_eq!(violations(&bad), vec!["address.country"], "{country:?}");
    }
    assert_eq!(address_rows(&app).await, 0);

    let created = create_address(
        &app,
        &admin,
        &org.id,
        address(AddressType::Billing, "Lagos"),
    )
    .await
    .expect("create");
    let bad_update = app
        .orgs()
        .update_address(authed(
            proto::UpdateAddressRequest {
                organization_id: org.id.clone(),
                address: Some(proto::Address {
                    id: created.id.clone(),
                    city: String::new(),
                    country: "xx".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["city", "country", "create_time"]),
            },
            &admin,
        ))
        .await
        .expect_err("bad update");
    assert_eq!(
        violations(&bad_update),
        vec!["address.city", "address.country", "update_mask"]
    );
    let stored = addresses::Entity::find()
        .one(app.store.db())
        .await
        .expect("read")
        .expect("row");
    assert_eq!(stored.city, "Lagos");
    assert_eq!(stored.version, 1);
    let bad_filter = app
        .orgs()
        .list_addresses(authed(
            proto::ListAddressesRequest {
                organization_id: org.id.clone(),
                r#type: 99,
            },
            &admin,
        ))
        .await
        .expect_err("unknown type");
    assert_eq!(violations(&bad_filter), vec!["type"]);
    app.stop().await;
}

async fn addresses_of_another_org_are_not_found(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme").await;
    let other = tenant(&app, "Other").await;
    let acme_admin = app.token("CONFIG_ADMIN", &acme.id);
    let other_admin = app.token("CONFIG_ADMIN", &other.id);
    let created = create_address(
        &app,
        &acme_admin,
        &acme.id,
        address(AddressType::Billing, "Lagos"),
    )
    .await
    .expect("create");
    let update = app
        .orgs()
        .update_address(authed(
            proto::UpdateAddressRequest {
                organization_id: other.id.clone(),
                address: Some(proto::Address {
                    id: created.id.clone(),
                    city: "Kano".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["city"]),
            },
            &other_admin,
        ))
        .await
        .expect_err("another org's address");
    assert_eq!(update.code(), Code::NotFound);
    let delete = app
        .orgs()
        .delete_address(authed(
            proto::DeleteAddressRequest {
                organization_id: other.id.clone(),
                address_id: created.id.clone(),
                etag: String::new(),
            },
            &other_admin,
        ))
        .await
        .expect_err("another org's address");
    assert_eq!(delete.code(), Code::NotFound);
    let cross = app
        .orgs()
        .delete_address(authed(
            proto::DeleteAddressRequest {
                organization_id: acme.id.clone(),
                address_id: created.id.clone(),
                etag: String::new(),
            },
            &other_admin,
        ))
        .await
        .expect_err("another org");
    assert_eq!(cross.code(), Code::PermissionDenied);
    let bad_id = app
        .orgs()
        .delete_address(authed(
            proto::DeleteAddressRequest {
                organization_id: acme.id.clone(),
                address_id: "adr_bad".into(),
                etag: String::new(),
            },
            &acme_admin,
        ))
        .await
        .expect_err("bad id");
    assert_eq!(violations(&bad_id), vec!["address_id"]);
    assert!(
        list_addresses(&app, &other_admin, &other.id, AddressType::Unspecified)
            .await
            .is_empty()
    );
    let stored = addresses::Entity::find()
        .one(app.store.db())
        .await
        .expect("read")
        .expect("row");
    assert_eq!(stored.city, "Lagos");
    app.stop().await;
}

async fn the_address_book_holds_at_most_fifty(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Acme").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    for i in 0..50 {
        create_address(
            &app,
            &admin,
            &org.id,
            address(AddressType::Mailing, &format!("City {i}")),
        )
        .await
        .expect("create");
    }
    let full = create_address(
        &app,
        &admin,
        &org.id,
        address(AddressType::Mailing, "One Too Many"),
    )
    .await
    .expect_err("limit");
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert_eq!(reason(&full), "ADDRESS_LIMIT_REACHED");
    assert_eq!(address_rows(&app).await, 50);
    app.stop().await;
}
