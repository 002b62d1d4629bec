//! The auth state's part of a batch: turning auth on and off, and changes
//! to users, roles and permissions, with etcd's rules. Every change bumps
//! the auth revision; a request that changes nothing (enabling auth that
//! is on, granting a role the user has) leaves it.
//!
//! Stored in the `auth` keyspace: `enabled`, `revision` and `token-key`,
//! and each user under `user/<name>` and role under `role/<name>`.

use std::sync::Arc;

use keel_api::authpb::{Role, User, UserAddOptions};
use keel_api::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use keel_api::keelpb::command::Op;
use prost::Message;

use super::Writer;
use crate::auth::{check_name, is_valid_permission_range, AuthError, AuthState, ROOT};
use crate::MvccError;

/// `auth` keyspace key: whether auth is on (one byte).
pub(crate) const ENABLED: &[u8] = b"enabled";
/// `auth` keyspace key: the auth revision.
pub(crate) const REVISION: &[u8] = b"revision";
/// `auth` keyspace key: the token signing key.
pub(crate) const TOKEN_KEY: &[u8] = b"token-key";
const USER_PREFIX: &[u8] = b"user/";
const ROLE_PREFIX: &[u8] = b"role/";

fn user_key(name: &str) -> Vec<u8> {
    [USER_PREFIX, name.as_bytes()].concat()
}

fn role_key(name: &str) -> Vec<u8> {
    [ROLE_PREFIX, name.as_bytes()].concat()
}

/// Reads the auth state from the `auth` keyspace.
pub(crate) fn load(
    snapshot: &fjall::Snapshot,
    keyspace: &fjall::Keyspace,
) -> Result<AuthState, MvccError> {
    use fjall::Readable;
    let corrupt = |what: &str| MvccError::Corrupt(format!("auth record: {what}"));
    let mut state = AuthState::default();
    for entry in snapshot.iter(keyspace) {
        let (key, value) = entry.into_inner()?;
        if let Some(name) = key.strip_prefix(USER_PREFIX) {
            let user = User::decode(value.as_ref()).map_err(|_| corrupt("user"))?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("user name"))?;
            state.users.insert(name, user);
        } else if let Some(name) = key.strip_prefix(ROLE_PREFIX) {
            let role = Role::decode(value.as_ref()).map_err(|_| corrupt("role"))?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("role name"))?;
            state.roles.insert(name, role);
        } else if key.as_ref() == ENABLED {
            state.enabled = value.as_ref() == [1];
        } else if key.as_ref() == REVISION {
            let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| corrupt("revision"))?;
            state.revision = u64::from_be_bytes(bytes);
        } else if key.as_ref() == TOKEN_KEY {
            state.token_key = value.to_vec();
        }
    }
    Ok(state)
}

impl Writer<'_> {
    /// Applies an auth change.
    pub(super) fn auth_change(&mut self, op: &Op) -> Result<(), MvccError> {
        let changed = match op {
            Op::AuthEnable(enable) => self.enable(&enable.token_key)?,
            Op::AuthDisable(_) => self.disable(),
            Op::UserAdd(add) => self.user_add(add)?,
            Op::UserDelete(delete) => self.user_delete(&delete.name)?,
            Op::UserChangePassword(change) => self.change_password(change)?,
            Op::UserGrantRole(grant) => self.grant_role(grant)?,
            Op::UserRevokeRole(revoke) => self.revoke_role(revoke)?,
            Op::RoleAdd(add) => self.role_add(&add.name)?,
            Op::RoleDelete(delete) => self.role_delete(&delete.role)?,
            Op::RoleGrantPermission(grant) => self.grant_permission(grant)?,
            Op::RoleRevokePermission(revoke) => self.revoke_permission(revoke)?,
            _ => return Err(MvccError::InvalidArgument("not an auth change".into())),
        };
        if changed {
            self.bump_auth_revision();
        }
        Ok(())
    }

    /// The auth state to change (the batch's own copy).
    fn auth_mut(&mut self) -> &mut AuthState {
        self.auth_changed = true;
        Arc::make_mut(&mut self.auth)
    }

    fn keyspace(&self) -> fjall::Keyspace {
        self.store.inner.keyspaces.auth.clone()
    }

    fn bump_auth_revision(&mut self) {
        let revision = {
            let auth = self.auth_mut();
            auth.revision += 1;
            auth.revision
        };
        let keyspace = self.keyspace();
        self.batch
            .insert(&keyspace, REVISION, revision.to_be_bytes());
    }

    fn enable(&mut self, token_key: &[u8]) -> Result<bool, MvccError> {
        if self.auth.enabled {
            return Ok(false);
        }
        let Some(root) = self.auth.user(ROOT) else {
            return Err(AuthError::RootUserNotExist.into());
        };
        if !root.roles.iter().any(|r| r == ROOT) {
            return Err(AuthError::RootRoleNotExist.into());
        }
        let keyspace = self.keyspace();
        self.batch.insert(&keyspace, ENABLED, [1]);
        self.batch.insert(&keyspace, TOKEN_KEY, token_key);
        let auth = self.auth_mut();
        auth.enabled = true;
        auth.token_key = token_key.to_vec();
        Ok(true)
    }

    fn disable(&mut self) -> bool {
        if !self.auth.enabled {
            return false;
        }
        let keyspace = self.keyspace();
        self.batch.insert(&keyspace, ENABLED, [0]);
        self.auth_mut().enabled = false;
        true
    }

    fn put_user(&mut self, name: &str, user: User) {
        let keyspace = self.keyspace();
        self.batch
            .insert(&keyspace, user_key(name), user.encode_to_vec());
        self.auth_mut().users.insert(name.to_string(), user);
    }

    fn put_role(&mut self, name: &str, role: Role) {
        let keyspace = self.keyspace();
        self.batch
            .insert(&keyspace, role_key(name), role.encode_to_vec());
        self.auth_mut().roles.insert(name.to_string(), role);
    }

    /// The user named `name`, to change.
    fn existing_user(&self, name: &str) -> Result<User, MvccError> {
        Ok(self.auth.user(name).ok_or(AuthError::UserNotFound)?.clone())
    }

    /// The role named `name`, to change.
    fn existing_role(&self, name: &str) -> Result<Role, MvccError> {
        Ok(self.auth.role(name).ok_or(AuthError::RoleNotFound)?.clone())
    }

    fn user_add(&mut self, add: &AuthUserAddRequest) -> Result<bool, MvccError> {
        check_name(&add.name, AuthError::UserEmpty)?;
        if self.auth.user(&add.name).is_some() {
            return Err(AuthError::UserAlreadyExist.into());
        }
        let no_password = add.options.as_ref().is_some_and(|o| o.no_password);
        let user = User {
            name: add.name.as_bytes().to_vec().into(),
            password: if no_password {
                Default::default()
            } else {
                add.hashed_password.as_bytes().to_vec().into()
            },
            roles: Vec::new(),
            options: Some(UserAddOptions { no_password }),
        };
        self.put_user(&add.name, user);
        Ok(true)
    }

    fn user_delete(&mut self, name: &str) -> Result<bool, MvccError> {
        if self.auth.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt.into());
        }
        self.existing_user(name)?;
        let keyspace = self.keyspace();
        self.batch.remove(&keyspace, user_key(name));
        self.auth_mut().users.remove(name);
        Ok(true)
    }

    fn change_password(
        &mut self,
        change: &AuthUserChangePasswordRequest,
    ) -> Result<bool, MvccError> {
        let mut user = self.existing_user(&change.name)?;
        user.password = change.hashed_password.as_bytes().to_vec().into();
        self.put_user(&change.name, user);
        Ok(true)
    }

    fn grant_role(&mut self, grant: &AuthUserGrantRoleRequest) -> Result<bool, MvccError> {
        let mut user = self.existing_user(&grant.user)?;
        if grant.role != ROOT {
            self.existing_role(&grant.role)?;
        }
        let Err(at) = user.roles.binary_search(&grant.role) else {
            return Ok(false); // Granted already.
        };
        user.roles.insert(at, grant.role.clone());
        self.put_user(&grant.user, user);
        Ok(true)
    }

    fn revoke_role(&mut self, revoke: &AuthUserRevokeRoleRequest) -> Result<bool, MvccError> {
        if self.auth.enabled && revoke.name == ROOT && revoke.role == ROOT {
            return Err(AuthError::InvalidAuthMgmt.into());
        }
        let mut user = self.existing_user(&revoke.name)?;
        let at = user
            .roles
            .iter()
            .position(|r| *r == revoke.role)
            .ok_or(AuthError::RoleNotGranted)?;
        user.roles.remove(at);
        self.put_user(&revoke.name, user);
        Ok(true)
    }

    fn role_add(&mut self, name: &str) -> Result<bool, MvccError> {
        check_name(name, AuthError::RoleEmpty)?;
        if self.auth.role(name).is_some() {
            return Err(AuthError::RoleAlreadyExist.into());
        }
        let role = Role {
            name: name.as_bytes().to_vec().into(),
            key_permission: Vec::new(),
        };
        self.put_role(name, role);
        Ok(true)
    }

    fn role_delete(&mut self, name: &str) -> Result<bool, MvccError> {
        if self.auth.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt.into());
        }
        self.existing_role(name)?;
        let keyspace = self.keyspace();
        self.batch.remove(&keyspace, role_key(name));
        self.auth_mut().roles.remove(name);
        // No user keeps a role that is gone.
        let holders: Vec<(String, User)> = self
            .auth
            .users
            .iter()
            .filter(|(_, u)| u.roles.iter().any(|r| r == name))
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect();
        for (holder, mut user) in holders {
            user.roles.retain(|r| r != name);
            self.put_user(&holder, user);
        }
        Ok(true)
    }

    fn grant_permission(
        &mut self,
        grant: &AuthRoleGrantPermissionRequest,
    ) -> Result<bool, MvccError> {
        let mut role = self.existing_role(&grant.name)?;
        let permission = grant
            .perm
            .clone()
            .ok_or_else(|| MvccError::InvalidArgument("permission not given".into()))?;
        if !is_valid_permission_range(&permission.key, &permission.range_end) {
            return Err(AuthError::InvalidAuthMgmt.into());
        }
        let same_range = role
            .key_permission
            .iter_mut()
            .find(|p| p.key == permission.key && p.range_end == permission.range_end);
        match same_range {
            Some(existing) => existing.perm_type = permission.perm_type,
            None => {
                let at = role.key_permission.partition_point(|p| {
                    (&p.key, &p.range_end) < (&permission.key, &permission.range_end)
                });
                role.key_permission.insert(at, permission);
            }
        }
        self.put_role(&grant.name, role);
        Ok(true)
    }

    fn revoke_permission(
        &mut self,
        revoke: &AuthRoleRevokePermissionRequest,
    ) -> Result<bool, MvccError> {
        let mut role = self.existing_role(&revoke.role)?;
        let at = role
            .key_permission
            .iter()
            .position(|p| p.key == revoke.key && p.range_end == revoke.range_end)
            .ok_or(AuthError::PermissionNotGranted)?;
        role.key_permission.remove(at);
        self.put_role(&revoke.role, role);
        Ok(true)
    }
}
