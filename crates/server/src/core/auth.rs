//! Authentication and authorization: logging in, the auth changes (each
//! through the log, passwords hashed first, so the log never holds one),
//! reading users and roles, and the checks every client request passes —
//! against the replicated rules of keel-mvcc.

use std::sync::Arc;
use std::time::Instant;

use keel_api::etcdserverpb::{
    AuthRoleGetResponse, AuthRoleListResponse, AuthStatusResponse, AuthUserGetResponse,
    AuthUserListResponse, AuthenticateRequest, AuthenticateResponse,
};
use keel_api::keelpb::{command::Op, AuthContext, AuthEnable, Command as CommandPb};
use keel_mvcc::auth::{Access, AuthError, AuthState};
use keel_mvcc::WriteResponse;

use super::kv::unexpected;
use super::{blocking, Core, ServerError};
use crate::auth::limiter::LoginLimiter;
use crate::auth::{tokens, Caller};

/// How this member issues tokens and hashes passwords.
pub(crate) struct AuthSettings {
    /// How long a token stays valid.
    pub(crate) token_ttl: std::time::Duration,
    /// The bcrypt cost of new password hashes.
    pub(crate) bcrypt_cost: u32,
    /// Failed logins per user name.
    pub(crate) limiter: LoginLimiter,
    /// A hash of a random password at `bcrypt_cost`, checked against when
    /// the user does not exist, so that a login takes as long either way.
    decoy: String,
}

impl AuthSettings {
    /// Settings with tokens valid for `token_ttl` and hashes of `bcrypt_cost`.
    pub(crate) fn new(token_ttl: std::time::Duration, bcrypt_cost: u32) -> AuthSettings {
        let random = hex(&tokens::new_key());
        AuthSettings {
            token_ttl,
            bcrypt_cost,
            limiter: LoginLimiter::default(),
            decoy: bcrypt::hash(random, bcrypt_cost).unwrap_or_default(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Core {
    /// The auth rules in force on this member.
    pub(crate) fn auth_state(&self) -> Arc<AuthState> {
        self.store.auth()
    }

    /// Whom `caller`'s request is checked as: `None` when it is not
    /// checked (a member's own request, or auth is off); else the rules in
    /// force and the user its token names ("" without a token). A token
    /// that is malformed, forged, expired, or names a user deleted since is
    /// refused.
    fn resolve(&self, caller: &Caller) -> Result<Option<(Arc<AuthState>, String)>, ServerError> {
        let Caller::Client { token, common_name } = caller else {
            return Ok(None);
        };
        let auth = self.auth_state();
        if !auth.enabled() {
            return Ok(None);
        }
        let user = match (token, common_name) {
            (Some(token), _) => tokens::verify(auth.token_key(), token, tokens::unix_now())
                .filter(|user| auth.user(user).is_some())
                .ok_or(AuthError::InvalidToken)?,
            // No token: the verified certificate names the user.
            (None, Some(common_name)) => common_name.clone(),
            (None, None) => String::new(),
        };
        Ok(Some((auth, user)))
    }

    /// Checks a user name and password and issues a token. Failures are
    /// limited per name; a name that does not exist costs as much time as
    /// a wrong password.
    pub(crate) async fn authenticate(
        &self,
        request: AuthenticateRequest,
    ) -> Result<AuthenticateResponse, ServerError> {
        let auth = self.auth_state();
        if !auth.enabled() {
            return Err(AuthError::NotEnabled.into());
        }
        let limiter = &self.auth.limiter;
        if !limiter.may_try(&request.name, Instant::now()) {
            return Err(ServerError::TooManyLogins);
        }
        let hash = auth
            .user(&request.name)
            .map(|u| String::from_utf8_lossy(&u.password).into_owned())
            .filter(|hash| !hash.is_empty());
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.auth.decoy.clone());
        let password = request.password;
        let matches = blocking("password check", move || {
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await?;
        if !(matches && known) {
            limiter.failed(&request.name, Instant::now());
            return Err(AuthError::AuthFailed.into());
        }
        limiter.succeeded(&request.name);
        let expires = tokens::unix_now() + self.auth.token_ttl.as_secs();
        let token =
            tokens::issue(auth.token_key(), &request.name, expires).ok_or(AuthError::NotEnabled)?;
        Ok(AuthenticateResponse {
            header: Some(self.header()),
            token,
        })
    }

    /// A bcrypt hash of `password`, made off the async threads.
    pub(crate) async fn hash_password(&self, password: String) -> Result<String, ServerError> {
        let cost = self.auth.bcrypt_cost;
        blocking("password hashing", move || bcrypt::hash(password, cost))
            .await?
            .map_err(|e| ServerError::Internal(format!("hashing a password: {e}")))
    }

    /// Applies an auth change for `caller` (root, once auth is on).
    /// Turning auth on picks a new token key.
    pub(crate) async fn auth_change(&self, caller: &Caller, op: Op) -> Result<(), ServerError> {
        let op = match op {
            Op::AuthEnable(_) => Op::AuthEnable(AuthEnable {
                token_key: tokens::new_key().into(),
            }),
            other => other,
        };
        let mut command = CommandPb {
            op: Some(op),
            auth: None,
        };
        self.authorize(caller, &mut command)?;
        match self.write(command).await? {
            WriteResponse::Auth => {}
            _ => return Err(unexpected("auth change")),
        }
        // A follower answers once it applies the change too, so the
        // caller's next request here meets the new rules.
        self.linearizable().await
    }

    /// Whether auth is on, and its revision (linearizable).
    pub(crate) async fn auth_status(&self) -> Result<AuthStatusResponse, ServerError> {
        self.linearizable().await?;
        let auth = self.auth_state();
        Ok(AuthStatusResponse {
            header: Some(self.header()),
            enabled: auth.enabled(),
            auth_revision: auth.revision(),
        })
    }

    /// A user's roles: root's to read, or the user's own.
    pub(crate) async fn user_get(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<AuthUserGetResponse, ServerError> {
        self.linearizable().await?;
        if let Some((auth, user)) = self.resolve(caller)? {
            if user.is_empty() || user != name {
                auth.check_admin(&user)?;
            }
        }
        let auth = self.auth_state();
        let user = auth.user(name).ok_or(AuthError::UserNotFound)?;
        Ok(AuthUserGetResponse {
            header: Some(self.header()),
            roles: user.roles.clone(),
        })
    }

    /// Every user's name (root only).
    pub(crate) async fn user_list(
        &self,
        caller: &Caller,
    ) -> Result<AuthUserListResponse, ServerError> {
        self.linearizable().await?;
        self.authorize_admin(caller)?;
        Ok(AuthUserListResponse {
            header: Some(self.header()),
            users: self.auth_state().user_names(),
        })
    }

    /// A role's permissions: root's to read, or a holder's of the role.
    pub(crate) async fn role_get(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<AuthRoleGetResponse, ServerError> {
        self.linearizable().await?;
        if let Some((auth, user)) = self.resolve(caller)? {
            let holds = auth
                .user(&user)
                .is_some_and(|u| u.roles.iter().any(|r| r == name));
            if !holds {
                auth.check_admin(&user)?;
            }
        }
        let auth = self.auth_state();
        let role = auth.role(name).ok_or(AuthError::RoleNotFound)?;
        Ok(AuthRoleGetResponse {
            header: Some(self.header()),
            perm: role.key_permission.clone(),
        })
    }

    /// Every role's name (root only).
    pub(crate) async fn role_list(
        &self,
        caller: &Caller,
    ) -> Result<AuthRoleListResponse, ServerError> {
        self.linearizable().await?;
        self.authorize_admin(caller)?;
        Ok(AuthRoleListResponse {
            header: Some(self.header()),
            roles: self.auth_state().role_names(),
        })
    }

    /// Whether `caller` may read `key`..`range_end`.
    pub(crate) fn authorize_read(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), ServerError> {
        self.authorize_ranges(caller, [(key, range_end)], &[Access::Read])
    }

    /// Whether `caller` may have every one of `accesses` on every
    /// `(key, range_end)` of `ranges`; its token is checked once.
    pub(crate) fn authorize_ranges<'a>(
        &self,
        caller: &Caller,
        ranges: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        accesses: &[Access],
    ) -> Result<(), ServerError> {
        let Some((auth, user)) = self.resolve(caller)? else {
            return Ok(());
        };
        for (key, range_end) in ranges {
            for &access in accesses {
                auth.check(&user, key, range_end, access)?;
            }
        }
        Ok(())
    }

    /// Whether `caller` may do what only root may.
    pub(crate) fn authorize_admin(&self, caller: &Caller) -> Result<(), ServerError> {
        match self.resolve(caller)? {
            Some((auth, user)) => Ok(auth.check_admin(&user)?),
            None => Ok(()),
        }
    }

    /// Whether `caller` may have `command` applied; if so, stamps it with
    /// the user and the auth revision it was checked at, so a member that
    /// applies it under newer rules checks again.
    pub(crate) fn authorize(
        &self,
        caller: &Caller,
        command: &mut CommandPb,
    ) -> Result<(), ServerError> {
        let Some((auth, user)) = self.resolve(caller)? else {
            return Ok(());
        };
        auth.check_command(&user, command)?;
        command.auth = Some(AuthContext {
            user,
            revision: auth.revision(),
        });
        Ok(())
    }
}
