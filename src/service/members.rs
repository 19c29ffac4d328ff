//! Members and invitations. (Being written.)

use crate::{auth::Caller, error::{Error, Result}, grpc::Ctx, proto};

/// InviteMember.
pub async fn invite(_ctx: Ctx, _caller: Caller, _req: proto::InviteMemberRequest) -> Result<proto::InviteMemberResponse> { Err(Error::Unimplemented("members")) }
/// AcceptInvitation.
pub async fn accept(_ctx: Ctx, _caller: Caller, _req: proto::AcceptInvitationRequest) -> Result<proto::AcceptInvitationResponse> { Err(Error::Unimplemented("members")) }
/// ListInvitations.
pub async fn list_invitations(_ctx: Ctx, _caller: Caller, _req: proto::ListInvitationsRequest) -> Result<proto::ListInvitationsResponse> { Err(Error::Unimplemented("members")) }
/// RevokeInvitation.
pub async fn revoke_invitation(_ctx: Ctx, _caller: Caller, _req: proto::RevokeInvitationRequest) -> Result<proto::RevokeInvitationResponse> { Err(Error::Unimplemented("members")) }
/// ListMembers.
pub async fn list_members(_ctx: Ctx, _caller: Caller, _req: proto::ListMembersRequest) -> Result<proto::ListMembersResponse> { Err(Error::Unimplemented("members")) }
/// UpdateMemberRole.
pub async fn update_role(_ctx: Ctx, _caller: Caller, _req: proto::UpdateMemberRoleRequest) -> Result<proto::UpdateMemberRoleResponse> { Err(Error::Unimplemented("members")) }
/// RemoveMember.
pub async fn remove(_ctx: Ctx, _caller: Caller, _req: proto::RemoveMemberRequest) -> Result<proto::RemoveMemberResponse> { Err(Error::Unimplemented("members")) }
