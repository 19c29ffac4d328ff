//! SubscriptionService adapter. Plans, subscriptions, renewals, add-ons and agreements
//! arrive with the subscriptions issue; until then every RPC checks its caller and
//! answers UNIMPLEMENTED.

use crate::{
    grpc::{Ctx, pending_rpcs},
    proto::subscription_service_server::SubscriptionService,
};

const CAPABILITY: &str = "subscriptions (plans, lifecycle, renewals, add-ons, agreements)";

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
    pending_rpcs! { CAPABILITY;
        list_plans(ListPlansRequest -> ListPlansResponse) [];
        get_plan(GetPlanRequest -> GetPlanResponse) [];
        get_subscription(GetSubscriptionRequest -> GetSubscriptionResponse) [organization_id];
        create_subscription(CreateSubscriptionRequest -> CreateSubscriptionResponse) [organization_id];
        preview_plan_change(PreviewPlanChangeRequest -> PreviewPlanChangeResponse) [organization_id];
        change_plan(ChangePlanRequest -> ChangePlanResponse) [organization_id];
        cancel_subscription(CancelSubscriptionRequest -> CancelSubscriptionResponse) [organization_id];
        resume_subscription(ResumeSubscriptionRequest -> ResumeSubscriptionResponse) [organization_id];
        admin_update_subscription(AdminUpdateSubscriptionRequest -> AdminUpdateSubscriptionResponse) [organization_id];
        run_billing_cycle(RunBillingCycleRequest -> RunBillingCycleResponse) [organization_id];
        list_addon_services(ListAddonServicesRequest -> ListAddonServicesResponse) [];
        get_service_pricing(GetServicePricingRequest -> GetServicePricingResponse) [organization_id];
        purchase_service(PurchaseServiceRequest -> PurchaseServiceResponse) [organization_id];
        complete_service_purchase(CompleteServicePurchaseRequest -> CompleteServicePurchaseResponse) [organization_id];
        list_purchased_services(ListPurchasedServicesRequest -> ListPurchasedServicesResponse) [organization_id];
        get_agreement(GetAgreementRequest -> GetAgreementResponse) [organization_id];
        accept_agreement(AcceptAgreementRequest -> AcceptAgreementResponse) [organization_id];
        list_agreements(ListAgreementsRequest -> ListAgreementsResponse) [organization_id];
        revoke_agreement(RevokeAgreementRequest -> RevokeAgreementResponse) [organization_id];
    }
}
