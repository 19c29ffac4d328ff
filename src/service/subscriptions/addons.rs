//! Add-on services (SPEC §6, seed 001): GetServicePricing, PurchaseService,
//! CompleteServicePurchase, ListPurchasedServices.
//!
//! A purchase is paid from credits (one SERVICE_PURCHASE ledger entry, ACTIVE at once)
//! or through a payment gateway (PENDING until the intent succeeds; completed exactly
//! once by CompleteServicePurchase, ConfirmManualPayment / `tenantry payments confirm`
//! for the manual gateway, or the Stripe webhook — all through [`complete_with_intent`]).
//! Services that carry terms need the organization's ACTIVE agreement for the current
//! terms version at purchase time (checked under the organization's row lock, which
//! AcceptAgreement and RevokeAgreement also take). Revoking an agreement later does not
//! end purchases already made: they stay ACTIVE; only new purchases are refused.
//! MONTHLY add-ons are billed again by the renewal cycle from the ACTIVE rows.

mod complete;
mod list;
mod purchase;

pub use complete::{complete_service_purchase, complete_with_intent, purchase_paid_by};
pub use list::list_purchased_services;
pub use purchase::purchase_service;

use crate::{
    auth::Caller,
    domain::{
        ids::{self, IdKind},
        money::{Currency, Money},
        plans::{Addon, ChargeType},
        subscription::{PaymentSource, PurchaseStatus},
    },
    error::{Error, Result, Violations},
    grpc::{
        Ctx,
        convert::{self, etag, money, timestamp},
    },
    proto,
    storage::entities::service_purchases,
};

use super::agreements;

/// Longest catalogue key accepted.
const MAX_SERVICE_ID_LEN: usize = 64;

/// Checks a required catalogue key of an add-on service.
pub(super) fn check_service_id(v: &mut Violations, value: &str) {
    if value.is_empty() {
        v.add("service_id", "is required");
    } else if value.chars().count() > MAX_SERVICE_ID_LEN {
        v.add(
            "service_id",
            format!("must be at most {MAX_SERVICE_ID_LEN} characters"),
        );
    }
}

/// The add-on `id` of the catalogue; NOT_FOUND when the catalogue has no such service.
pub(super) fn find_addon(ctx: &Ctx, id: &str) -> Result<Addon> {
    ctx.settings
        .billing
        .catalogue
        .addon(id)
        .cloned()
        .ok_or_else(|| Error::not_found("service", id))
}

/// The add-on's unit price in `currency`; FAILED_PRECONDITION `SERVICE_NOT_AVAILABLE`
/// when it is not sold in that currency.
pub(super) fn unit_price(addon: &Addon, currency: Currency) -> Result<i64> {
    addon.price(currency).ok_or_else(|| {
        Error::precondition(
            "SERVICE_NOT_AVAILABLE",
            format!("{} is not sold in {currency}", addon.name),
        )
        .with("service_id", &addon.id)
        .with("currency", currency.code())
    })
}

/// A charge type as proto.
pub fn charge_type_proto(charge: ChargeType) -> proto::AddonChargeType {
    match charge {
        ChargeType::OneTime => proto::AddonChargeType::OneTime,
        ChargeType::Monthly => proto::AddonChargeType::Monthly,
    }
}

/// An add-on of the catalogue as proto, with its prices in every currency (the shape
/// ListAddonServices and GetServicePricing share).
pub fn addon_proto(addon: &Addon) -> proto::AddonService {
    proto::AddonService {
        id: addon.id.clone(),
        name: addon.name.clone(),
        category: addon.category.clone(),
        description: addon.description.clone(),
        prices: addon
            .prices
            .iter()
            .map(|(currency, micros)| money(Money::from_micros(*currency, *micros)))
            .collect(),
        charge_type: charge_type_proto(addon.charge_type) as i32,
        requires_agreement: addon.terms.is_some(),
        agreement_version: addon
            .terms
            .as_ref()
            .map(|t| t.version.clone())
            .unwrap_or_default(),
    }
}

/// A purchase status as proto.
pub fn purchase_status_proto(status: PurchaseStatus) -> proto::ServicePurchaseStatus {
    match status {
        PurchaseStatus::Pending => proto::ServicePurchaseStatus::Pending,
        PurchaseStatus::Active => proto::ServicePurchaseStatus::Active,
        PurchaseStatus::Failed => proto::ServicePurchaseStatus::Failed,
        PurchaseStatus::Canceled => proto::ServicePurchaseStatus::Canceled,
    }
}

/// A payment source as proto.
pub fn payment_source_proto(source: PaymentSource) -> proto::ServicePaymentSource {
    match source {
        PaymentSource::Credits => proto::ServicePaymentSource::Credits,
        PaymentSource::Gateway => proto::ServicePaymentSource::Gateway,
    }
}

/// A request's payment source; `None` for UNSPECIFIED or an unknown value.
pub fn payment_source_of(value: i32) -> Option<PaymentSource> {
    match proto::ServicePaymentSource::try_from(value) {
        Ok(proto::ServicePaymentSource::Credits) => Some(PaymentSource::Credits),
        Ok(proto::ServicePaymentSource::Gateway) => Some(PaymentSource::Gateway),
        _ => None,
    }
}

/// A purchase row as proto.
pub fn to_proto(row: &service_purchases::Model) -> proto::PurchasedService {
    let currency = row.currency.parse().unwrap_or(Currency::Usd);
    proto::PurchasedService {
        id: ids::encode(IdKind::ServicePurchase, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        service_id: row.service_id.clone(),
        service_name: row.service_name.clone(),
        quantity: i32::try_from(row.quantity).unwrap_or(i32::MAX),
        amount: Some(money(Money::from_micros(currency, row.amount_micros))),
        payment_source: row
            .payment_source
            .parse()
            .map(payment_source_proto)
            .unwrap_or(proto::ServicePaymentSource::Unspecified) as i32,
        status: row
            .status
            .parse()
            .map(purchase_status_proto)
            .unwrap_or(proto::ServicePurchaseStatus::Unspecified) as i32,
        transaction_id: row
            .transaction_id
            .map(|id| ids::encode(IdKind::Transaction, id))
            .unwrap_or_default(),
        gateway: row.gateway.clone(),
        payment_intent_id: row.payment_intent_id.clone().unwrap_or_default(),
        agreement_id: row
            .agreement_id
            .map(|id| ids::encode(IdKind::Agreement, id))
            .unwrap_or_default(),
        request_id: row.request_id.clone(),
        purchased_by: row.purchased_by.clone(),
        activate_time: row.activate_time.and_then(timestamp),
        create_time: timestamp(row.create_time),
        update_time: timestamp(row.update_time),
        etag: etag(row.version),
    }
}

/// GetServicePricing: the service, its unit price in the organization's currency, its
/// current terms and whether the organization accepted them.
pub async fn get_service_pricing(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetServicePricingRequest,
) -> Result<proto::GetServicePricingResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let mut v = Violations::new();
    check_service_id(&mut v, &req.service_id);
    v.finish()?;
    let addon = find_addon(&ctx, &req.service_id)?;
    let currency = convert::org_currency(org);
    let unit = unit_price(&addon, currency)?;
    let agreement_accepted = match &addon.terms {
        Some(terms) => agreements::active(ctx.store.db(), org.id, &addon.id)
            .await?
            .is_some_and(|a| a.terms_version == terms.version),
        None => false,
    };
    Ok(proto::GetServicePricingResponse {
        service: Some(addon_proto(&addon)),
        unit_price: Some(money(Money::from_micros(currency, unit))),
        terms: addon
            .terms
            .as_ref()
            .map(|t| agreements::terms_proto(&addon.id, t)),
        agreement_accepted,
    })
}
