//! Authentication and access control on real members, through etcd's gRPC
//! API and its JSON gateway: etcd's flow (root, enable, a role with a
//! prefix, a reader who cannot write), tokens that every member accepts
//! and that die with their user, their TTL or a disable/enable, root-only
//! operations, bad input that leaves the auth state intact, and random
//! requests of random users against a model of the rules.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::http::{call, call_with, post};
use common::Cluster;
use keel_api::authpb::{permission::Type, Permission};
use keel_api::etcdserverpb::auth_client::AuthClient;
use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_api::etcdserverpb::request_op::Request as Op;
use keel_api::etcdserverpb::watch_client::WatchClient;
use keel_api::etcdserverpb::watch_request::RequestUnion;
use keel_api::etcdserverpb::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const ROOT_PASSWORD: &str = "root-secret";

/// Adds a token to every request.
#[derive(Clone)]
struct Token(Option<String>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("token", token.parse().expect("ascii token"));
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Token>;

/// Clients of member `i` acting with `token`.
struct As {
    kv: KvClient<Svc>,
    auth: AuthClient<Svc>,
    maintenance: MaintenanceClient<Svc>,
    cluster: ClusterClient<Svc>,
    watch: WatchClient<Svc>,
}

async fn as_token(cluster: &Cluster, i: usize, token: Option<String>) -> As {
    let channel = cluster.channel(i).await;
    let t = Token(token);
    As {
        kv: KvClient::with_interceptor(channel.clone(), t.clone()),
        auth: AuthClient::with_interceptor(channel.clone(), t.clone()),
        maintenance: MaintenanceClient::with_interceptor(channel.clone(), t.clone()),
        cluster: ClusterClient::with_interceptor(channel.clone(), t.clone()),
        watch: WatchClient::with_interceptor(channel, t),
    }
}

async fn login(cluster: &Cluster, i: usize, name: &str, password: &str) -> Result<String, Status> {
    let mut auth = AuthClient::new(cluster.channel(i).await);
    let response = auth
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?;
    Ok(response.into_inner().token)
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn permission(kind: Type, key: &str, end: &str) -> Permission {
    Permission {
        perm_type: kind as i32,
        key: bytes(key),
        range_end: bytes(end),
    }
}

async fn put(c: &mut As, key: &str) -> Result<(), Status> {
    c.kv.put(PutRequest {
        key: bytes(key),
        value: bytes("v"),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn get(c: &mut As, key: &str, end: &str) -> Result<RangeResponse, Status> {
    c.kv.range(RangeRequest {
        key: bytes(key),
        range_end: bytes(end),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, message: &str) {
    match result {
        Err(status) => assert_eq!((status.code(), status.message()), (code, message)),
        Ok(answer) => panic!("expected {message:?}, got {answer:?}"),
    }
}

const DENIED: &str = "etcdserver: permission denied";

/// etcdctl's `auth enable`: the root role, granted to root, then enable.
async fn setup_root(c: &mut As) {
    c.auth
        .user_add(AuthUserAddRequest {
            name: "root".into(),
            password: ROOT_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("root added");
    c.auth
        .role_add(AuthRoleAddRequest {
            name: "root".into(),
        })
        .await
        .expect("root role");
    c.auth
        .user_grant_role(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .expect("granted");
    c.auth
        .auth_enable(AuthEnableRequest {})
        .await
        .expect("enabled");
}

/// A role `name` with `perms`, and a user of the same name with it.
async fn user_with(root: &mut As, name: &str, perms: Vec<Permission>) {
    root.auth
        .role_add(AuthRoleAddRequest { name: name.into() })
        .await
        .expect("role");
    for perm in perms {
        root.auth
            .role_grant_permission(AuthRoleGrantPermissionRequest {
                name: name.into(),
                perm: Some(perm),
            })
            .await
            .expect("permission");
    }
    root.auth
        .user_add(AuthUserAddRequest {
            name: name.into(),
            password: format!("{name}-pw"),
            ..Default::default()
        })
        .await
        .expect("user");
    root.auth
        .user_grant_role(AuthUserGrantRoleRequest {
            user: name.into(),
            role: name.into(),
        })
        .await
        .expect("grant");
}

/// A watch on `key`..`end`: its first response.
async fn first_watch_response(c: &mut As, key: &str, end: &str) -> WatchResponse {
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: bytes(key),
            range_end: bytes(end),
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.unwrap();
    let mut responses = c
        .watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("answered")
        .expect("no error")
        .expect("a response");
    drop(tx);
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_auth_flow_tokens_on_every_member_and_root_only_operations() {
    let cluster = Cluster::start(3, &["--bcrypt-cost", "4", "--log-level", "debug"]).await;
    let mut anonymous = as_token(&cluster, 0, None).await;
    setup_root(&mut anonymous).await;
    let status = anonymous
        .auth
        .auth_status(AuthStatusRequest {})
        .await
        .unwrap();
    assert!(status.into_inner().enabled);

    // Without a token: etcd's "user name is empty".
    assert_refused(
        put(&mut anonymous, "a/1").await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );
    assert_refused(
        login(&cluster, 0, "root", "wrong").await,
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    );
    assert_refused(
        login(&cluster, 0, "nobody", "x").await,
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    );

    let root_token = login(&cluster, 0, "root", ROOT_PASSWORD).await.unwrap();
    let mut root = as_token(&cluster, 0, Some(root_token.clone())).await;
    put(&mut root, "a/1").await.expect("root writes anywhere");
    put(&mut root, "b/1").await.expect("root writes anywhere");
    user_with(
        &mut root,
        "reader",
        vec![permission(Type::Read, "a/", "a0")],
    )
    .await;

    // The reader's token works on another member too.
    let token = login(&cluster, 1, "reader", "reader-pw").await.unwrap();
    for i in 0..3 {
        let mut reader = as_token(&cluster, i, Some(token.clone())).await;
        let read = get(&mut reader, "a/", "a0")
            .await
            .expect("reads its prefix");
        assert_eq!(read.kvs.len(), 1, "member {i}");
        assert_refused(
            put(&mut reader, "a/2").await,
            Code::PermissionDenied,
            DENIED,
        );
        assert_refused(
            get(&mut reader, "b/1", "").await,
            Code::PermissionDenied,
            DENIED,
        );
    }
    let mut reader = as_token(&cluster, 2, Some(token.clone())).await;
    // A txn is checked whole: compares and both branches.
    let txn = TxnRequest {
        compare: vec![Compare {
            key: bytes("a/1"),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: bytes("a/1"),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: bytes("a/1"),
                ..Default::default()
            })),
        }],
    };
    assert_refused(reader.kv.txn(txn).await, Code::PermissionDenied, DENIED);
    // A watch outside the user's range is created and canceled at once.
    let refused = first_watch_response(&mut reader, "b/", "b0").await;
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(
        refused.cancel_reason,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    let allowed = first_watch_response(&mut reader, "a/", "a0").await;
    assert!(allowed.created && !allowed.canceled, "{allowed:?}");
    // Root only.
    assert_refused(
        reader
            .kv
            .compact(CompactionRequest {
                revision: 1,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_refused(
        reader.maintenance.defragment(DefragmentRequest {}).await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_refused(
        reader
            .cluster
            .member_remove(MemberRemoveRequest { id: 1 })
            .await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_refused(
        reader.auth.user_list(AuthUserListRequest {}).await,
        Code::PermissionDenied,
        DENIED,
    );
    // A user reads itself.
    let me = reader
        .auth
        .user_get(AuthUserGetRequest {
            name: "reader".into(),
        })
        .await
        .expect("own record");
    assert_eq!(me.into_inner().roles, ["reader"]);

    // Forged and malformed tokens.
    // One character of the signature changed.
    let at = token.len() - 10;
    let other = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{other}{}", &token[..at], &token[at + 1..]);
    for bad in [forged.as_str(), "nonsense", "a.b"] {
        let mut c = as_token(&cluster, 0, Some(bad.to_string())).await;
        assert_refused(
            get(&mut c, "a/1", "").await,
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        );
    }
    // A deleted user's token dies with it.
    root.auth
        .user_delete(AuthUserDeleteRequest {
            name: "reader".into(),
        })
        .await
        .unwrap();
    assert_refused(
        get(&mut reader, "a/1", "").await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );

    // Disable: everyone may do everything; enable again: old tokens are void.
    root.auth.auth_disable(AuthDisableRequest {}).await.unwrap();
    put(&mut anonymous, "c/1").await.expect("auth off");
    anonymous
        .auth
        .auth_enable(AuthEnableRequest {})
        .await
        .unwrap();
    assert_refused(
        get(&mut root, "a/1", "").await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
    let fresh = login(&cluster, 2, "root", ROOT_PASSWORD).await.unwrap();
    let mut root = as_token(&cluster, 2, Some(fresh.clone())).await;
    get(&mut root, "a/1", "").await.expect("a new token works");

    // No password and no token in any member's log (at debug level).
    for member in &cluster.members {
        let log = std::fs::read_to_string(&member.log).unwrap_or_default();
        assert!(!log.is_empty(), "{} logs", member.log.display());
        for secret in [ROOT_PASSWORD, "reader-pw", token.as_str(), fresh.as_str()] {
            assert!(
                !log.contains(secret),
                "{} holds a secret",
                member.log.display()
            );
        }
    }
}

/// Bad input: each gets its error and the auth state is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_auth_input_gets_etcds_errors_and_changes_nothing() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let mut anonymous = as_token(&cluster, 0, None).await;
    setup_root(&mut anonymous).await;
    let token = login(&cluster, 0, "root", ROOT_PASSWORD).await.unwrap();
    let mut root = as_token(&cluster, 0, Some(token)).await;
    let before = root
        .auth
        .auth_status(AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_refused(
        root.auth
            .user_add(AuthUserAddRequest {
                name: String::new(),
                password: "x".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );
    assert_refused(
        root.auth
            .role_add(AuthRoleAddRequest {
                name: "r".repeat(100 * 1024),
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: user or role name is too long (at most 1024 bytes)",
    );
    root.auth
        .role_add(AuthRoleAddRequest { name: "r".into() })
        .await
        .unwrap();
    assert_refused(
        root.auth
            .role_grant_permission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(permission(Type::Read, "k", "a")),
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: invalid auth management",
    );
    assert_refused(
        root.auth
            .user_delete(AuthUserDeleteRequest {
                name: "root".into(),
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: invalid auth management",
    );
    assert_refused(
        root.auth
            .user_get(AuthUserGetRequest {
                name: "ghost".into(),
            })
            .await,
        Code::FailedPrecondition,
        "etcdserver: user name not found",
    );
    let after = root
        .auth
        .auth_status(AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.auth_revision,
        before.auth_revision + 1,
        "only the role add"
    );
    let roles = root
        .auth
        .role_get(AuthRoleGetRequest { role: "r".into() })
        .await
        .unwrap();
    assert!(roles.into_inner().perm.is_empty());
}

/// A token lives as long as the configured TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expires_after_its_ttl() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4", "--auth-token-ttl", "1"]).await;
    let mut anonymous = as_token(&cluster, 0, None).await;
    setup_root(&mut anonymous).await;
    let token = login(&cluster, 0, "root", ROOT_PASSWORD).await.unwrap();
    let mut root = as_token(&cluster, 0, Some(token)).await;
    get(&mut root, "k", "").await.expect("fresh");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_refused(
        get(&mut root, "k", "").await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
}

/// The JSON gateway: authenticate, then the token in `Authorization`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_takes_the_token_in_the_authorization_header() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let mut anonymous = as_token(&cluster, 0, None).await;
    setup_root(&mut anonymous).await;
    let addr = cluster.members[0].spec.client.clone();
    let answer = post(
        &addr,
        "/v3/auth/authenticate",
        json!({"name": "root", "password": ROOT_PASSWORD}),
    )
    .await;
    let token = answer["token"].as_str().expect("a token").to_string();
    let (code, refused) = call(
        &addr,
        "POST",
        "/v3/kv/put",
        json!({"key": "YQ==", "value": "YQ=="}),
    )
    .await;
    assert_eq!(code, 400, "{refused}");
    assert_eq!(refused["message"], "etcdserver: user name is empty");
    let (code, _) = call_with(
        &addr,
        "POST",
        "/v3/kv/put",
        &[("authorization", token.as_str())],
        json!({"key": "YQ==", "value": "YQ=="}),
    )
    .await;
    assert_eq!(code, 200);
    let (code, refused) = call_with(
        &addr,
        "POST",
        "/v3/kv/put",
        &[("authorization", "forged")],
        json!({"key": "YQ==", "value": "YQ=="}),
    )
    .await;
    assert_eq!(code, 401, "{refused}");
}

/// The rules as a model: a request's range is allowed when every key in
/// it is granted. Keys are drawn from a few letters, so checking each
/// boundary point decides coverage exactly.
mod model {
    /// `[start, end)`; `None`: unbounded.
    pub(super) type Range = (Vec<u8>, Option<Vec<u8>>);

    pub(super) fn range(key: &str, end: &str) -> Range {
        let key = key.as_bytes().to_vec();
        match end {
            "" => {
                let mut next = key.clone();
                next.push(0);
                (key, Some(next))
            }
            "\0" => (key, None),
            end => (key, Some(end.as_bytes().to_vec())),
        }
    }

    fn contains(r: &Range, point: &[u8]) -> bool {
        point >= r.0.as_slice() && r.1.as_ref().is_none_or(|e| point < e.as_slice())
    }

    /// Whether `granted` covers every key of `wanted`.
    pub(super) fn covers(granted: &[Range], wanted: &Range) -> bool {
        if wanted.1.as_ref().is_some_and(|e| e <= &wanted.0) {
            return true;
        }
        let mut points = vec![wanted.0.clone()];
        for g in granted {
            points.push(g.0.clone());
            points.extend(g.1.clone());
        }
        points
            .iter()
            .filter(|p| contains(wanted, p))
            .all(|p| granted.iter().any(|g| contains(g, p)))
    }
}

/// Random users with random permissions make random requests (KV, nested
/// txns, watches): each allowed one succeeds and each forbidden one gets
/// "permission denied", as the model says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_of_random_users_match_the_model() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let mut anonymous = as_token(&cluster, 0, None).await;
    setup_root(&mut anonymous).await;
    let token = login(&cluster, 0, "root", ROOT_PASSWORD).await.unwrap();
    let mut root = as_token(&cluster, 0, Some(token)).await;
    let seed: u64 = std::env::var("KEEL_AUTH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let letters = ["a", "b", "c", "d", "e"];
    let pick_range = |rng: &mut rand::rngs::StdRng| -> (String, String) {
        let key = letters[rng.random_range(0..letters.len())].to_string();
        let end = match rng.random_range(0..4) {
            0 => String::new(),
            1 => "\0".to_string(),
            _ => letters[rng.random_range(0..letters.len())].to_string(),
        };
        (key, end)
    };
    for user in 0..4 {
        let name = format!("u{user}");
        let mut perms = Vec::new();
        // As etcd does, a grant on the same range replaces the kind.
        let mut granted = std::collections::BTreeMap::new();
        for _ in 0..rng.random_range(0..4) {
            let (key, end) = pick_range(&mut rng);
            if !end.is_empty() && end != "\0" && end <= key {
                continue; // Not a valid permission range.
            }
            let kind = [Type::Read, Type::Write, Type::Readwrite][rng.random_range(0..3)];
            granted.insert((key.clone(), end.clone()), kind);
            perms.push(permission(kind, &key, &end));
        }
        let of_kind = |not: Type| -> Vec<model::Range> {
            granted
                .iter()
                .filter(|(_, kind)| **kind != not)
                .map(|((key, end), _)| model::range(key, end))
                .collect()
        };
        let (reads, writes) = (of_kind(Type::Write), of_kind(Type::Read));
        user_with(&mut root, &name, perms).await;
        let token = login(&cluster, 0, &name, &format!("{name}-pw"))
            .await
            .unwrap();
        let mut c = as_token(&cluster, 0, Some(token)).await;
        for round in 0..25 {
            let (key, end) = pick_range(&mut rng);
            let wanted = model::range(&key, &end);
            let what = format!(
                "seed {seed} {name} round {round}: [{key:?}, {end:?}) reads {reads:?} writes {writes:?}"
            );
            let may_read = model::covers(&reads, &wanted);
            let single = model::range(&key, "");
            let may_write = model::covers(&writes, &single);
            match rng.random_range(0..4) {
                0 => check(get(&mut c, &key, &end).await, may_read, &what),
                1 => check(put(&mut c, &key).await, may_write, &what),
                2 => {
                    // A nested txn: read the range in the outer success,
                    // put the key in an inner failure branch.
                    let inner = TxnRequest {
                        failure: vec![RequestOp {
                            request: Some(Op::RequestPut(PutRequest {
                                key: bytes(&key),
                                ..Default::default()
                            })),
                        }],
                        ..Default::default()
                    };
                    let txn = TxnRequest {
                        success: vec![
                            RequestOp {
                                request: Some(Op::RequestRange(RangeRequest {
                                    key: bytes(&key),
                                    range_end: bytes(&end),
                                    ..Default::default()
                                })),
                            },
                            RequestOp {
                                request: Some(Op::RequestTxn(inner)),
                            },
                        ],
                        ..Default::default()
                    };
                    check(c.kv.txn(txn).await, may_read && may_write, &what);
                }
                _ => {
                    let first = first_watch_response(&mut c, &key, &end).await;
                    let denied = first.cancel_reason.ends_with(DENIED);
                    assert_eq!(denied, !may_read, "{what}: {first:?}");
                    let empty = wanted.1.as_ref().is_some_and(|e| e <= &wanted.0);
                    assert_eq!(first.canceled, denied || empty, "{what}: {first:?}");
                }
            }
        }
    }
}

fn check<T: std::fmt::Debug>(result: Result<T, Status>, allowed: bool, what: &str) {
    match (result, allowed) {
        (Ok(_), true) => {}
        (Err(status), false) => {
            assert_eq!(
                (status.code(), status.message()),
                (Code::PermissionDenied, DENIED),
                "{what}"
            );
        }
        (result, allowed) => panic!("{what}: allowed {allowed}, got {result:?}"),
    }
}

/// The admin API is root's once auth is on (its OpenAPI document stays
/// public); the dashboard's login form gets the token from the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_roots_once_auth_is_on() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let addr = cluster.members[0].spec.client.clone();
    let (code, _) = call(&addr, "GET", "/api/v1/cluster", json!(null)).await;
    assert_eq!(code, 200, "auth off: open");
    let mut anonymous = as_token(&cluster, 0, None).await;
    setup_root(&mut anonymous).await;
    let root_token = login(&cluster, 0, "root", ROOT_PASSWORD).await.unwrap();
    let mut root = as_token(&cluster, 0, Some(root_token.clone())).await;
    user_with(
        &mut root,
        "alice",
        vec![permission(Type::Readwrite, "a", "\0")],
    )
    .await;
    let alice = login(&cluster, 0, "alice", "alice-pw").await.unwrap();
    let (code, answer) = call(&addr, "GET", "/api/v1/cluster", json!(null)).await;
    assert_eq!(code, 401, "{answer}");
    assert_eq!(answer["error"], "unauthenticated");
    let (code, answer) = call_with(
        &addr,
        "GET",
        "/api/v1/keys",
        &[("authorization", alice.as_str())],
        json!(null),
    )
    .await;
    assert_eq!(code, 403, "{answer}");
    for path in ["/api/v1/cluster", "/api/v1/keys", "/api/v1/leases"] {
        let (code, answer) = call_with(
            &addr,
            "GET",
            path,
            &[("authorization", root_token.as_str())],
            json!(null),
        )
        .await;
        assert_eq!(code, 200, "{path}: {answer}");
    }
    put(&mut root, "a").await.unwrap();
    put(&mut root, "b").await.unwrap();
    let (code, _) = call_with(
        &addr,
        "POST",
        "/api/v1/compact",
        &[("authorization", root_token.as_str())],
        json!({"revision": 2}),
    )
    .await;
    assert_eq!(code, 200, "root's actions go through");
    let (code, _) = call(&addr, "GET", "/api/v1/openapi.json", json!(null)).await;
    assert_eq!(code, 200);
}

/// The keel CLI logs in with `--user name:password`, as etcdctl does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_logs_in_with_user() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let mut anonymous = as_token(&cluster, 0, None).await;
    setup_root(&mut anonymous).await;
    let endpoint = cluster.members[0].spec.client.clone();
    let keel = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .args(["--endpoints", &endpoint])
            .output()
            .expect("keel runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let root = format!("root:{ROOT_PASSWORD}");
    let (ok, out) = keel(&["put", "k", "v", "--user", &root]);
    assert!(ok, "{out}");
    let (ok, out) = keel(&["get", "k", "--user", "root", "--password", ROOT_PASSWORD]);
    assert!(ok && out.contains('v'), "{out}");
    let (ok, out) = keel(&["get", "k"]);
    assert!(!ok && out.contains("user name is empty"), "{out}");
    let (ok, out) = keel(&["get", "k", "--user", "root:wrong"]);
    assert!(
        !ok && out.contains("authentication failed, invalid user ID or password"),
        "{out}"
    );
}
