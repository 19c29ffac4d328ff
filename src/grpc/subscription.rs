//! SubscriptionService adapter: plans, subscriptions, renewals, add-ons and agreements.

use crate::{
    grpc::{Ctx, delegate},
    proto::subscription_service_server::SubscriptionService,
    service::subscriptions::{addons, agreements, change, cycle, lifecycle, plans, read},
};

/// The SubscriptionService.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    ctx: Ctx,
}

impl Subscriptions {
    /// A service over `ctx`.
    pub fn new(ctx: Ctx) -> Self {
        Subscriptions { ctx }
    }
}

#[tonic::async_trait]
impl SubscriptionService for Subscriptions {
    delegate! {
        list_plans(ListPlansRequest -> ListPlansResponse) => plans::list_plans;
        get_plan(GetPlanRequest -> GetPlanResponse) => plans::get_plan;
        get_subscription(GetSubscriptionRequest -> GetSubscriptionResponse) => read::get_subscription;
        create_subscription(CreateSubscriptionRequest -> CreateSubscriptionResponse) => lifecycle::create_subscription;
        preview_plan_change(PreviewPlanChangeRequest -> PreviewPlanChangeResponse) => change::preview_plan_change;
        change_plan(ChangePlanRequest -> ChangePlanResponse) => change::change_plan;
        cancel_subscription(CancelSubscriptionRequest -> CancelSubscriptionResponse) => lifecycle::cancel_subscription;
        resume_subscription(ResumeSubscriptionRequest -> ResumeSubscriptionResponse) => lifecycle::resume_subscription;
        admin_update_subscription(AdminUpdateSubscriptionRequest -> AdminUpdateSubscriptionResponse) => lifecycle::admin_update_subscription;
        run_billing_cycle(RunBillingCycleRequest -> RunBillingCycleResponse) => cycle::run_billing_cycle;
        list_addon_services(ListAddonServicesRequest -> ListAddonServicesResponse) => plans::list_addon_services;
        get_service_pricing(GetServicePricingRequest -> GetServicePricingResponse) => addons::get_service_pricing;
        purchase_service(PurchaseServiceRequest -> PurchaseServiceResponse) => addons::purchase_service;
        complete_service_purchase(CompleteServicePurchaseRequest -> CompleteServicePurchaseResponse) => addons::complete_service_purchase;
        list_purchased_services(ListPurchasedServicesRequest -> ListPurchasedServicesResponse) => addons::list_purchased_services;
        get_agreement(GetAgreementRequest -> GetAgreementResponse) => agreements::get_agreement;
        accept_agreement(AcceptAgreementRequest -> AcceptAgreementResponse) => agreements::accept_agreement;
        list_agreements(ListAgreementsRequest -> ListAgreementsResponse) => agreements::list_agreements;
        revoke_agreement(RevokeAgreementRequest -> RevokeAgreementResponse) => agreements::revoke_agreement;
    }
}
