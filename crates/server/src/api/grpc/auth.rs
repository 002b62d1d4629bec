//! `etcdserverpb.Auth`: turning auth on and off, logging in, and managing
//! users, roles and permissions. Passwords are hashed here, before they
//! are proposed, so the log and snapshots hold only bcrypt hashes.

use std::sync::Arc;

use keel_api::etcdserverpb::auth_server::{Auth, AuthServer};
use keel_api::etcdserverpb::*;
use keel_api::keelpb::command::Op;
use keel_api::keelpb::AuthEnable;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::core::{Core, ServerError};

/// The Auth service of one member.
pub(crate) struct AuthService(pub(crate) Arc<Core>);

impl AuthService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> AuthServer<Self> {
        AuthServer::new(self)
    }

    /// Applies an auth change for the request's caller and answers with a
    /// header.
    async fn change<T>(&self, caller: &Caller, op: Op) -> Result<T, Status>
    where
        T: From<ResponseHeader>,
    {
        self.0.auth_change(caller, op).await?;
        Ok(T::from(self.0.header()))
    }

    /// `password`, hashed, unless a hash was given or none is wanted.
    async fn hashed(&self, password: String, hashed: String) -> Result<String, ServerError> {
        if !hashed.is_empty() || password.is_empty() {
            return Ok(hashed);
        }
        self.0.hash_password(password).await
    }
}

/// Responses that are only a header.
macro_rules! header_only {
    ($($response:ident),+ $(,)?) => {$(
        impl From<ResponseHeader> for Wrapped<$response> {
            fn from(header: ResponseHeader) -> Self {
                Wrapped($response { header: Some(header) })
            }
        }
    )+};
}

/// A response built from a header (a local wrapper, as the response types
/// are generated elsewhere).
struct Wrapped<T>(T);

header_only!(
    AuthEnableResponse,
    AuthDisableResponse,
    AuthUserAddResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse,
);

type Answer<T> = Result<Response<T>, Status>;

fn answer<T>(wrapped: Wrapped<T>) -> Answer<T> {
    Ok(Response::new(wrapped.0))
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Answer<AuthEnableResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::AuthEnable(AuthEnable::default());
        answer(self.change(&caller, op).await?)
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Answer<AuthDisableResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::AuthDisable(request.into_inner());
        answer(self.change(&caller, op).await?)
    }

    async fn auth_status(&self, _: Request<AuthStatusRequest>) -> Answer<AuthStatusResponse> {
        Ok(Response::new(self.0.auth_status().await?))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Answer<AuthenticateResponse> {
        Ok(Response::new(
            self.0.authenticate(request.into_inner()).await?,
        ))
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Answer<AuthUserAddResponse> {
        let caller = Caller::of(request.extensions());
        // Only root may add users; checked before spending a hash on it.
        self.0.authorize_admin(&caller)?;
        let mut add = request.into_inner();
        let no_password = add.options.as_ref().is_some_and(|o| o.no_password);
        let password = std::mem::take(&mut add.password);
        add.hashed_password = if no_password {
            String::new()
        } else {
            self.hashed(password, std::mem::take(&mut add.hashed_password))
                .await?
        };
        answer(self.change(&caller, Op::UserAdd(add)).await?)
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Answer<AuthUserGetResponse> {
        let caller = Caller::of(request.extensions());
        let name = request.into_inner().name;
        Ok(Response::new(self.0.user_get(&caller, &name).await?))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Answer<AuthUserListResponse> {
        let caller = Caller::of(request.extensions());
        Ok(Response::new(self.0.user_list(&caller).await?))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Answer<AuthUserDeleteResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::UserDelete(request.into_inner());
        answer(self.change(&caller, op).await?)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Answer<AuthUserChangePasswordResponse> {
        let caller = Caller::of(request.extensions());
        self.0.authorize_admin(&caller)?;
        let mut change = request.into_inner();
        let password = std::mem::take(&mut change.password);
        change.hashed_password = self
            .hashed(password, std::mem::take(&mut change.hashed_password))
            .await?;
        answer(self.change(&caller, Op::UserChangePassword(change)).await?)
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Answer<AuthUserGrantRoleResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::UserGrantRole(request.into_inner());
        answer(self.change(&caller, op).await?)
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Answer<AuthUserRevokeRoleResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::UserRevokeRole(request.into_inner());
        answer(self.change(&caller, op).await?)
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Answer<AuthRoleAddResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::RoleAdd(request.into_inner());
        answer(self.change(&caller, op).await?)
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Answer<AuthRoleGetResponse> {
        let caller = Caller::of(request.extensions());
        let role = request.into_inner().role;
        Ok(Response::new(self.0.role_get(&caller, &role).await?))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Answer<AuthRoleListResponse> {
        let caller = Caller::of(request.extensions());
        Ok(Response::new(self.0.role_list(&caller).await?))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Answer<AuthRoleDeleteResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::RoleDelete(request.into_inner());
        answer(self.change(&caller, op).await?)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Answer<AuthRoleGrantPermissionResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::RoleGrantPermission(request.into_inner());
        answer(self.change(&caller, op).await?)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Answer<AuthRoleRevokePermissionResponse> {
        let caller = Caller::of(request.extensions());
        let op = Op::RoleRevokePermission(request.into_inner());
        answer(self.change(&caller, op).await?)
    }
}
