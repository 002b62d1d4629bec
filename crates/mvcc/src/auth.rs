//! Users, roles and permissions, as etcd's auth store keeps them: the
//! replicated [`AuthState`], its rules for who may touch which keys, and
//! its errors (etcd's messages).
//!
//! A permission grants read, write or both on one key, a range
//! `[key, range_end)`, or every key from `key` on (`range_end` "\0"). A
//! request is allowed when the union of the ranges its user's roles grant
//! covers the whole range it touches. The `root` role may do everything.
//! While auth is disabled, everything is allowed.

use std::collections::BTreeMap;
use std::fmt;

use keel_api::authpb::{permission::Type as PermissionType, Permission, Role, User};
use keel_api::etcdserverpb::{request_op::Request, Compare, RequestOp, TxnRequest};
use keel_api::keelpb::{command::Op, Command};

/// The user (and role) with every permission.
pub const ROOT: &str = "root";

/// The longest user or role name taken, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Why an auth request was refused, or a request was not allowed; each
/// with etcd's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Authenticate while auth is off.
    #[error("etcdserver: authentication is not enabled")]
    NotEnabled,
    /// Enabling auth without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// Enabling auth while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// A request without a user while auth is on, or a user with no name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// Adding a user that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// A role with no name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Adding a role that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// Revoking a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// The user may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// Wrong user name or password (or a user without a password).
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A token that is malformed, forged, expired, or of a deleted user.
    #[error("etcdserver: invalid auth token")]
    InvalidToken,
    /// A change that would lock everyone out (deleting root, revoking
    /// root's role, deleting the root role while auth is on) or a
    /// permission whose range holds no key.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A user or role name longer than [`MAX_NAME_BYTES`].
    #[error("etcdserver: user or role name is too long (at most {MAX_NAME_BYTES} bytes)")]
    NameTooLong,
}

/// Reading or writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, watch, a txn's compares, `prev_kv`.
    Read,
    /// Put, delete.
    Write,
}

/// The replicated auth state: whether auth is on, its revision (bumped by
/// every change), the key tokens are signed with, the users and the roles.
#[derive(Clone, Default, PartialEq)]
pub struct AuthState {
    pub(crate) enabled: bool,
    pub(crate) revision: u64,
    pub(crate) token_key: Vec<u8>,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) roles: BTreeMap<String, Role>,
}

/// No password hash and no key in debug output.
impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthState")
            .field("enabled", &self.enabled)
            .field("revision", &self.revision)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("roles", &self.roles.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The end of a range: before a key, or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Before(Vec<u8>),
    Unbounded,
}

/// The keys `key` and `range_end` name, as `[start, end)`; `None` if none.
fn interval(key: &[u8], range_end: &[u8]) -> Option<(Vec<u8>, End)> {
    let end = match range_end {
        b"" => {
            let mut next = key.to_vec();
            next.push(0);
            End::Before(next)
        }
        b"\0" => End::Unbounded,
        end if end <= key => return None,
        end => End::Before(end.to_vec()),
    };
    Some((key.to_vec(), end))
}

/// Whether `key` and `range_end` name at least one key (what a permission
/// must do).
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    interval(key, range_end).is_some()
}

impl AuthState {
    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change to users, roles or
    /// whether auth is on.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The key tokens are signed with (set each time auth is enabled).
    pub fn token_key(&self) -> &[u8] {
        &self.token_key
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user's name, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every role's name, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Whether `user` exists and has the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == ROOT))
    }

    /// Whether `user` may do what only root may (always, with auth off).
    pub fn check_admin(&self, user: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.is_root(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` may read or write every key of `key`..`range_end`.
    pub fn check(
        &self,
        user: &str,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let Some(found) = self.users.get(user) else {
            return Err(AuthError::PermissionDenied);
        };
        if found.roles.iter().any(|r| r == ROOT) {
            return Ok(());
        }
        let Some((start, end)) = interval(key, range_end) else {
            return Ok(()); // Touches no key.
        };
        let mut granted: Vec<(Vec<u8>, End)> = found
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|role| &role.key_permission)
            .filter(|p| grants(p, access))
            .filter_map(|p| interval(&p.key, &p.range_end))
            .collect();
        granted.sort();
        // Walk the granted ranges in order, extending what is covered from
        // `start` on.
        let mut covered_to = End::Before(start.clone());
        for (from, to) in granted {
            if let End::Before(reached) = &covered_to {
                if from.as_slice() > reached.as_slice() {
                    break;
                }
            }
            if to > covered_to {
                covered_to = to;
            }
            if covered_to >= end {
                return Ok(());
            }
        }
        if covered_to >= end {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` may have `command` applied: the keys it reads and
    /// writes (a txn's compares and both branches, nested ones included,
    /// as etcd checks them), root for compaction and auth changes.
    /// Commands the members make themselves (leases, members, alarms) are
    /// not checked here.
    pub fn check_command(&self, user: &str, command: &Command) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        match &command.op {
            Some(Op::Put(put)) => {
                self.check(user, &put.key, b"", Access::Write)?;
                if put.prev_kv {
                    self.check(user, &put.key, b"", Access::Read)?;
                }
                Ok(())
            }
            Some(Op::DeleteRange(delete)) => {
                self.check(user, &delete.key, &delete.range_end, Access::Write)?;
                if delete.prev_kv {
                    self.check(user, &delete.key, &delete.range_end, Access::Read)?;
                }
                Ok(())
            }
            Some(Op::Txn(txn)) => self.check_txn(user, txn),
            Some(
                Op::Compact(_)
                | Op::AuthEnable(_)
                | Op::AuthDisable(_)
                | Op::UserAdd(_)
                | Op::UserDelete(_)
                | Op::UserChangePassword(_)
                | Op::UserGrantRole(_)
                | Op::UserRevokeRole(_)
                | Op::RoleAdd(_)
                | Op::RoleDelete(_)
                | Op::RoleGrantPermission(_)
                | Op::RoleRevokePermission(_),
            ) => self.check_admin(user),
            Some(
                Op::SetMember(_)
                | Op::RemoveMember(_)
                | Op::Alarm(_)
                | Op::LeaseGrant(_)
                | Op::LeaseRevoke(_)
                | Op::LeaseRenew(_)
                | Op::LeaseExpire(_),
            )
            | None => Ok(()),
        }
    }

    fn check_txn(&self, user: &str, txn: &TxnRequest) -> Result<(), AuthError> {
        for Compare { key, range_end, .. } in &txn.compare {
            self.check(user, key, range_end, Access::Read)?;
        }
        for RequestOp { request } in txn.success.iter().chain(&txn.failure) {
            match request {
                Some(Request::RequestRange(r)) => {
                    self.check(user, &r.key, &r.range_end, Access::Read)?
                }
                Some(Request::RequestPut(put)) => {
                    self.check_command(user, &command(Op::Put(put.clone())))?
                }
                Some(Request::RequestDeleteRange(delete)) => {
                    self.check_command(user, &command(Op::DeleteRange(delete.clone())))?
                }
                Some(Request::RequestTxn(nested)) => self.check_txn(user, nested)?,
                None => {}
            }
        }
        Ok(())
    }
}

fn command(op: Op) -> Command {
    Command {
        op: Some(op),
        auth: None,
    }
}

/// Whether permission `p` grants `access`.
fn grants(p: &Permission, access: Access) -> bool {
    match PermissionType::try_from(p.perm_type) {
        Ok(PermissionType::Readwrite) => true,
        Ok(PermissionType::Read) => access == Access::Read,
        Ok(PermissionType::Write) => access == Access::Write,
        Err(_) => false,
    }
}

/// Checks a user or role name: present and not too long.
pub fn check_name(name: &str, empty: AuthError) -> Result<(), AuthError> {
    if name.is_empty() {
        Err(empty)
    } else if name.len() > MAX_NAME_BYTES {
        Err(AuthError::NameTooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermissionType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
        }
    }

    /// Auth on; user `u` with roles granting `perms`; `root` is root.
    fn state(perms: Vec<Permission>) -> AuthState {
        let mut s = AuthState {
            enabled: true,
            ..Default::default()
        };
        s.roles.insert(
            "r".into(),
            Role {
                name: b"r".to_vec().into(),
                key_permission: perms,
            },
        );
        for (name, role) in [("u", "r"), ("root", ROOT)] {
            s.users.insert(
                name.into(),
                User {
                    name: name.as_bytes().to_vec().into(),
                    roles: vec![role.into()],
                    ..Default::default()
                },
            );
        }
        s
    }

    use Access::{Read, Write};
    use PermissionType::{Read as R, Readwrite as RW, Write as W};

    #[test]
    fn a_prefix_permission_covers_keys_and_ranges_inside_it_only() {
        let s = state(vec![perm(R, "a/", "a0")]);
        assert_eq!(s.check("u", b"a/x", b"", Read), Ok(()));
        assert_eq!(s.check("u", b"a/", b"a0", Read), Ok(()));
        assert_eq!(s.check("u", b"a/b", b"a/c", Read), Ok(()));
        let denied = Err(AuthError::PermissionDenied);
        assert_eq!(s.check("u", b"a/x", b"", Write), denied);
        assert_eq!(s.check("u", b"b", b"", Read), denied);
        assert_eq!(s.check("u", b"a/", b"a1", Read), denied);
        assert_eq!(s.check("u", b"a/", b"\0", Read), denied);
        assert_eq!(s.check("u", b"\0", b"\0", Read), denied);
    }

    #[test]
    fn ranges_granted_by_several_roles_and_kinds_join() {
        let mut s = state(vec![perm(R, "a", "c"), perm(RW, "c", "e")]);
        assert_eq!(s.check("u", b"b", b"d", Read), Ok(()));
        assert_eq!(
            s.check("u", b"b", b"d", Write),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check("u", b"c", b"e", Write), Ok(()));
        // A gap between two grants is not covered.
        s.roles.get_mut("r").unwrap().key_permission = vec![perm(W, "a", "b"), perm(W, "c", "d")];
        assert_eq!(
            s.check("u", b"a", b"d", Write),
            Err(AuthError::PermissionDenied)
        );
        // From a key on.
        s.roles.get_mut("r").unwrap().key_permission = vec![perm(W, "m", "\0")];
        assert_eq!(s.check("u", b"z", b"\0", Write), Ok(()));
        assert_eq!(
            s.check("u", b"a", b"", Write),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn a_single_key_permission_covers_that_key_only() {
        let s = state(vec![perm(RW, "k", "")]);
        assert_eq!(s.check("u", b"k", b"", Write), Ok(()));
        assert_eq!(
            s.check("u", b"k", b"k\0\0", Read),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check("u", b"k0", b"", Read),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn root_may_do_anything_and_nobody_needs_anything_with_auth_off() {
        let mut s = state(vec![]);
        assert_eq!(s.check("root", b"\0", b"\0", Write), Ok(()));
        assert_eq!(s.check_admin("root"), Ok(()));
        assert_eq!(s.check_admin("u"), Err(AuthError::PermissionDenied));
        assert_eq!(s.check("", b"k", b"", Read), Err(AuthError::UserEmpty));
        assert_eq!(
            s.check("ghost", b"k", b"", Read),
            Err(AuthError::PermissionDenied)
        );
        s.enabled = false;
        assert_eq!(s.check("", b"k", b"", Write), Ok(()));
        assert_eq!(s.check_admin(""), Ok(()));
    }

    #[test]
    fn a_txn_needs_read_on_its_compares_and_every_branch_nested_ones_too() {
        use keel_api::etcdserverpb::{PutRequest, RangeRequest};
        let s = state(vec![perm(RW, "w", ""), perm(R, "r", "")]);
        let put = |key: &str| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        };
        let read = |key: &str| RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: key.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        };
        let txn = |compare: &str, success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
            compare: vec![Compare {
                key: compare.as_bytes().to_vec().into(),
                ..Default::default()
            }],
            success,
            failure,
        };
        let ok = txn("r", vec![put("w"), read("r")], vec![read("w")]);
        assert_eq!(s.check_command("u", &command(Op::Txn(ok.clone()))), Ok(()));
        let denied = Err(AuthError::PermissionDenied);
        let bad_compare = txn("x", vec![], vec![]);
        assert_eq!(s.check_command("u", &command(Op::Txn(bad_compare))), denied);
        // The branch that would not run is checked too.
        let bad_failure = txn("r", vec![], vec![put("r")]);
        assert_eq!(s.check_command("u", &command(Op::Txn(bad_failure))), denied);
        let nested = RequestOp {
            request: Some(Request::RequestTxn(txn("r", vec![put("x")], vec![]))),
        };
        let bad_nested = txn("r", vec![put("w"), nested], vec![]);
        assert_eq!(s.check_command("u", &command(Op::Txn(bad_nested))), denied);
    }

    #[test]
    fn a_permission_range_must_name_a_key() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(is_valid_permission_range(b"a", b"\0"));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"b", b"b"));
    }

    #[test]
    fn names_must_be_present_and_short() {
        assert_eq!(
            check_name("", AuthError::UserEmpty),
            Err(AuthError::UserEmpty)
        );
        let long = "x".repeat(100 * 1024);
        assert_eq!(
            check_name(&long, AuthError::RoleEmpty),
            Err(AuthError::NameTooLong)
        );
        assert_eq!(check_name("alice", AuthError::UserEmpty), Ok(()));
    }
}
