//! OrganizationService adapter: every handler extracts the caller and delegates.

use tonic::{Request, Response, Status};

use crate::{
    grpc::{Ctx, caller_of, delegate},
    proto::{self, organization_service_server::OrganizationService},
    service::{agents, audit_log, members, orgs, profile, signups, subscriptions, watch, webhooks},
};

/// The OrganizationService.
#[derive(Debug, Clone)]
pub struct Organizations {
    ctx: Ctx,
}

impl Organizations {
    /// A service over `ctx`.
    pub fn new(ctx: Ctx) -> Self {
        Organizations { ctx }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl OrganizationService for Organizations {
    delegate! {
        create_organization(CreateOrganizationRequest -> CreateOrganizationResponse) => orgs::create;
        get_organization(GetOrganizationRequest -> GetOrganizationResponse) => orgs::get;
        list_organizations(ListOrganizationsRequest -> ListOrganizationsResponse) => orgs::list;
        update_organization(UpdateOrganizationRequest -> UpdateOrganizationResponse) => orgs::update;
        delete_organization(DeleteOrganizationRequest -> DeleteOrganizationResponse) => orgs::delete;
        check_slug_availability(CheckSlugAvailabilityRequest -> CheckSlugAvailabilityResponse) => orgs::check_slug;
        check_organization_name(CheckOrganizationNameRequest -> CheckOrganizationNameResponse) => orgs::check_name;
        set_organization_active(SetOrganizationActiveRequest -> SetOrganizationActiveResponse) => orgs::set_active;
        toggle_organization_active(ToggleOrganizationActiveRequest -> ToggleOrganizationActiveResponse) => orgs::toggle_active;
        deactivate_organization(DeactivateOrganizationRequest -> DeactivateOrganizationResponse) => orgs::deactivate;
        reactivate_organization(ReactivateOrganizationRequest -> ReactivateOrganizationResponse) => orgs::reactivate;
        regenerate_api_key(RegenerateApiKeyRequest -> RegenerateApiKeyResponse) => orgs::regenerate_api_key;
        register_organization(RegisterOrganizationRequest -> RegisterOrganizationResponse) => orgs::register;

        get_organization_profile(GetOrganizationProfileRequest -> GetOrganizationProfileResponse) => profile::get_profile;
        update_organization_profile(UpdateOrganizationProfileRequest -> UpdateOrganizationProfileResponse) => profile::update_profile;
        update_owner_profile(UpdateOwnerProfileRequest -> UpdateOwnerProfileResponse) => profile::update_owner;
        list_addresses(ListAddressesRequest -> ListAddressesResponse) => profile::list_addresses;
        create_address(CreateAddressRequest -> CreateAddressResponse) => profile::create_address;
        update_address(UpdateAddressRequest -> UpdateAddressResponse) => profile::update_address;
        delete_address(DeleteAddressRequest -> DeleteAddressResponse) => profile::delete_address;

        register_agent(RegisterAgentRequest -> RegisterAgentResponse) => agents::register;
        get_agent(GetAgentRequest -> GetAgentResponse) => agents::get;
        list_agents(ListAgentsRequest -> ListAgentsResponse) => agents::list;
        update_agent(UpdateAgentRequest -> UpdateAgentResponse) => agents::update;
        assign_agent(AssignAgentRequest -> AssignAgentResponse) => agents::assign;
        unassign_agent(UnassignAgentRequest -> UnassignAgentResponse) => agents::unassign;
        list_agent_assignments(ListAgentAssignmentsRequest -> ListAgentAssignmentsResponse) => agents::list_assignments;

        invite_member(InviteMemberRequest -> InviteMemberResponse) => members::invite;
        accept_invitation(AcceptInvitationRequest -> AcceptInvitationResponse) => members::accept;
        list_invitations(ListInvitationsRequest -> ListInvitationsResponse) => members::list_invitations;
        revoke_invitation(RevokeInvitationRequest -> RevokeInvitationResponse) => members::revoke_invitation;
        list_members(ListMembersRequest -> ListMembersResponse) => members::list_members;
        update_member_role(UpdateMemberRoleRequest -> UpdateMemberRoleResponse) => members::update_role;
        remove_member(RemoveMemberRequest -> RemoveMemberResponse) => members::remove;

        create_pre_approved_signup(CreatePreApprovedSignupRequest -> CreatePreApprovedSignupResponse) => signups::create;
        delete_pre_approved_signup(DeletePreApprovedSignupRequest -> DeletePreApprovedSignupResponse) => signups::delete;
        list_pre_approved_signups(ListPreApprovedSignupsRequest -> ListPreApprovedSignupsResponse) => signups::list;
        validate_signup(ValidateSignupRequest -> ValidateSignupResponse) => signups::validate;

        list_audit_events(ListAuditEventsRequest -> ListAuditEventsResponse) => audit_log::list;
        create_webhook_endpoint(CreateWebhookEndpointRequest -> CreateWebhookEndpointResponse) => webhooks::create_endpoint;
        list_webhook_endpoints(ListWebhookEndpointsRequest -> ListWebhookEndpointsResponse) => webhooks::list_endpoints;
        delete_webhook_endpoint(DeleteWebhookEndpointRequest -> DeleteWebhookEndpointResponse) => webhooks::delete_endpoint;

        set_feature_flag(SetFeatureFlagRequest -> SetFeatureFlagResponse) => subscriptions::features::set_feature_flag;
        clear_feature_flag(ClearFeatureFlagRequest -> ClearFeatureFlagResponse) => subscriptions::features::clear_feature_flag;
        cancel_account(CancelAccountRequest -> CancelAccountResponse) => subscriptions::account::cancel_account;
        reactivate_account(ReactivateAccountRequest -> ReactivateAccountResponse) => subscriptions::account::reactivate_account;
    }

    type WatchEventsStream = watch::EventStream;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        let caller = caller_of(&request)?;
        watch::watch(self.ctx.clone(), caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
