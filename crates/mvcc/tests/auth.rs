//! Auth in the store: etcd's rules for users, roles and permissions, the
//! auth revision, a permission revoked between admission and apply, and
//! what snapshots and reopening keep.

use bytes::Bytes;
use keel_api::authpb::{permission::Type, Permission, UserAddOptions};
use keel_api::etcdserverpb::{
    AuthDisableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserDeleteRequest,
    AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest, PutRequest,
};
use keel_api::keelpb::{command::Op, AuthContext, AuthEnable};
use keel_mvcc::auth::{Access, AuthError};
use keel_mvcc::{MvccError, Store, StoreOptions, WriteResponse};

mod common;
use common::Harness;

impl Harness {
    fn ok(&mut self, op: Op) {
        assert_eq!(self.apply(op), Ok(WriteResponse::Auth));
    }

    fn refused(&mut self, op: Op, error: AuthError) {
        assert_eq!(self.apply(op), Err(MvccError::Auth(error)));
    }
}

fn user_add(name: &str) -> Op {
    Op::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: "$2b$04$hash".into(),
        ..Default::default()
    })
}

fn role_add(name: &str) -> Op {
    Op::RoleAdd(AuthRoleAddRequest { name: name.into() })
}

fn grant_role(user: &str, role: &str) -> Op {
    Op::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn grant(role: &str, kind: Type, key: &str, end: &str) -> Op {
    Op::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: kind as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
        }),
    })
}

fn enable() -> Op {
    Op::AuthEnable(AuthEnable {
        token_key: Bytes::from_static(b"0123456789abcdef0123456789abcdef"),
    })
}

/// root (with the root role), role `reader` reading `a/`..`a0`, user
/// `alice` with it; auth on.
fn enabled() -> Harness {
    let mut h = Harness::new();
    h.ok(user_add("root"));
    h.ok(role_add("root"));
    h.ok(grant_role("root", "root"));
    h.ok(role_add("reader"));
    h.ok(grant("reader", Type::Read, "a/", "a0"));
    h.ok(user_add("alice"));
    h.ok(grant_role("alice", "reader"));
    h.ok(enable());
    h
}

#[test]
fn enabling_needs_root_with_the_root_role() {
    let mut h = Harness::new();
    h.refused(enable(), AuthError::RootUserNotExist);
    h.ok(user_add("root"));
    h.refused(enable(), AuthError::RootRoleNotExist);
    h.ok(grant_role("root", "root"));
    h.ok(enable());
    let auth = h.store.auth();
    assert!(auth.enabled());
    assert_eq!(auth.token_key().len(), 32);
}

#[test]
fn every_change_bumps_the_revision_and_a_no_op_does_not() {
    let mut h = enabled();
    let before = h.store.auth().revision();
    h.ok(grant_role("alice", "reader")); // Granted already.
    h.ok(enable()); // On already.
    assert_eq!(h.store.auth().revision(), before);
    h.ok(role_add("writer"));
    assert_eq!(h.store.auth().revision(), before + 1);
    h.ok(Op::AuthDisable(AuthDisableRequest {}));
    assert_eq!(h.store.auth().revision(), before + 2);
    assert!(!h.store.auth().enabled());
}

#[test]
fn etcds_refusals() {
    let mut h = enabled();
    h.refused(user_add("alice"), AuthError::UserAlreadyExist);
    h.refused(user_add(""), AuthError::UserEmpty);
    h.refused(role_add("reader"), AuthError::RoleAlreadyExist);
    h.refused(role_add(""), AuthError::RoleEmpty);
    h.refused(grant_role("bob", "reader"), AuthError::UserNotFound);
    h.refused(grant_role("alice", "nope"), AuthError::RoleNotFound);
    h.refused(
        Op::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "alice".into(),
            role: "root".into(),
        }),
        AuthError::RoleNotGranted,
    );
    h.refused(
        Op::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "reader".into(),
            key: Bytes::from_static(b"b"),
            range_end: Bytes::new(),
        }),
        AuthError::PermissionNotGranted,
    );
    // Nothing may lock root out while auth is on.
    h.refused(
        Op::UserDelete(AuthUserDeleteRequest {
            name: "root".into(),
        }),
        AuthError::InvalidAuthMgmt,
    );
    h.refused(
        Op::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "root".into(),
            role: "root".into(),
        }),
        AuthError::InvalidAuthMgmt,
    );
    h.refused(
        Op::RoleDelete(AuthRoleDeleteRequest {
            role: "root".into(),
        }),
        AuthError::InvalidAuthMgmt,
    );
    // A permission whose range holds no key.
    h.refused(
        grant("reader", Type::Read, "b", "a"),
        AuthError::InvalidAuthMgmt,
    );
    h.refused(user_add(&"x".repeat(100 * 1024)), AuthError::NameTooLong);
    // The state is as it was.
    let auth = h.store.auth();
    assert_eq!(auth.user_names(), ["alice", "root"]);
    assert_eq!(auth.role_names(), ["reader", "root"]);
}

#[test]
fn deleting_a_role_takes_it_from_its_users() {
    let mut h = enabled();
    h.ok(Op::RoleDelete(AuthRoleDeleteRequest {
        role: "reader".into(),
    }));
    let auth = h.store.auth();
    assert!(auth.user("alice").unwrap().roles.is_empty());
    assert_eq!(
        auth.check("alice", b"a/x", b"", Access::Read),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn a_user_without_a_password_keeps_none() {
    let mut h = Harness::new();
    h.ok(Op::UserAdd(AuthUserAddRequest {
        name: "cert-only".into(),
        hashed_password: "ignored".into(),
        options: Some(UserAddOptions { no_password: true }),
        ..Default::default()
    }));
    assert!(h
        .store
        .auth()
        .user("cert-only")
        .unwrap()
        .password
        .is_empty());
}

/// A write admitted at an older auth revision is checked again when
/// applied: a permission revoked in between is honoured; one admitted at
/// the current revision is not checked twice.
#[test]
fn a_permission_revoked_between_admission_and_apply_is_honoured() {
    let mut h = enabled();
    h.ok(role_add("writer"));
    h.ok(grant("writer", Type::Write, "w", ""));
    h.ok(grant_role("alice", "writer"));
    let admitted_at = h.store.auth().revision();
    let put = || {
        Op::Put(PutRequest {
            key: Bytes::from_static(b"w"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
    };
    let as_alice = |revision| {
        Some(AuthContext {
            user: "alice".into(),
            revision,
        })
    };
    assert!(h.apply_as(put(), as_alice(admitted_at)).is_ok());
    h.ok(Op::UserRevokeRole(AuthUserRevokeRoleRequest {
        name: "alice".into(),
        role: "writer".into(),
    }));
    assert_eq!(
        h.apply_as(put(), as_alice(admitted_at)),
        Err(MvccError::Auth(AuthError::PermissionDenied))
    );
}

#[test]
fn auth_survives_snapshots_and_reopening() {
    let mut h = enabled();
    let before = h.store.auth();
    let mut stream = Vec::new();
    Store::write_snapshot(h.store.view(), &mut stream).unwrap();
    let copy = Harness::new();
    copy.store.restore(&mut stream.as_slice()).unwrap();
    assert_eq!(copy.store.auth(), before);
    let path = h.dir.path().to_path_buf();
    h.ok(role_add("later"));
    let after = h.store.auth();
    drop(h.store);
    let reopened = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(reopened.auth(), after);
}
