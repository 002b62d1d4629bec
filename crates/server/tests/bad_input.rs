//! Malformed and oversized requests get etcd's errors, and the member keeps
//! serving: nothing crashes or wedges it.

mod common;

use std::io::Write;

use common::{put, Cluster};
use keel_api::etcdserverpb::*;
use tonic::Code;

/// Checks that `result` failed with `code` and a message containing `message`.
fn check<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    message: &str,
) {
    let status = result.expect_err("must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(message),
        "{status:?} lacks {message:?}"
    );
}

fn op_put(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_member_keeps_serving() {
    let cluster = Cluster::start(1, &["--max-txn-ops", "8", "--max-request-bytes", "4096"]).await;
    let mut kv = cluster.kv(0).await;
    check(
        kv.put(PutRequest::default()).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    check(
        kv.put(PutRequest {
            key: b"k".to_vec().into(),
            value: vec![b'x'; 5000].into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    check(
        kv.range(RangeRequest {
            key: b"k".to_vec().into(),
            sort_order: 7,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "sort",
    );
    check(
        kv.range(RangeRequest {
            key: b"k".to_vec().into(),
            revision: 1_000_000,
            ..Default::default()
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    check(
        kv.txn(TxnRequest {
            success: (0..9).map(|i| op_put(&format!("k{i}"))).collect(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    check(
        kv.txn(TxnRequest {
            success: vec![op_put("same"), op_put("same")],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    check(
        kv.txn(TxnRequest {
            compare: vec![Compare {
                target: compare::CompareTarget::Version as i32,
                result: 9,
                key: b"k".to_vec().into(),
                target_union: Some(compare::TargetUnion::Version(1)),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "",
    );
    check(
        kv.compact(CompactionRequest {
            revision: 1_000_000,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        "future revision",
    );
    let mut cluster_client =
        keel_api::etcdserverpb::cluster_client::ClusterClient::new(cluster.channel(0).await);
    check(
        cluster_client
            .member_remove(MemberRemoveRequest { id: 12345 })
            .await,
        Code::NotFound,
        "etcdserver: member not found",
    );
    check(
        cluster_client
            .member_add(MemberAddRequest {
                peer_ur_ls: vec!["not a url".into()],
                is_learner: false,
            })
            .await,
        Code::InvalidArgument,
        "not a url",
    );

    // Garbage on the client port and the peer port: bytes that are not HTTP/2.
    for address in [
        &cluster.members[0].spec.client,
        &cluster.members[0].spec.peer,
    ] {
        let mut socket = std::net::TcpStream::connect(address).expect("connect");
        let _ = socket.write_all(&[0xde; 4096]);
    }

    // Still serving, with everything it acknowledged.
    put(&cluster, 0, "after", "ok")
        .await
        .expect("put after bad input");
    let response = kv
        .range(RangeRequest {
            key: b"after".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(&response.kvs[0].value[..], b"ok");
}

/// Keys longer than the storage engine holds (65,535 bytes once encoded)
/// once crashed the apply loop and, being in the log, every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_too_long_to_store_is_refused_and_the_member_keeps_serving() {
    let cluster = Cluster::start(1, &[]).await;
    let mut kv = cluster.kv(0).await;
    let too_long = vec![b'k'; 70_000];
    check(
        kv.put(PutRequest {
            key: too_long.clone().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key is too long",
    );
    check(
        kv.range(RangeRequest {
            key: b"a".to_vec().into(),
            range_end: too_long.clone().into(),
            serializable: true,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key is too long",
    );
    check(
        kv.txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: too_long.into(),
                        ..Default::default()
                    },
                )),
            }],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key is too long",
    );
    let longest = vec![0u8; keel_mvcc::MAX_KEY_BYTES];
    kv.put(PutRequest {
        key: longest.clone().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("the longest key is stored");
    let response = kv
        .range(RangeRequest {
            key: longest.into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(response.kvs.len(), 1);
    put(&cluster, 0, "after", "ok")
        .await
        .expect("put after bad input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn has_leader_requests_fail_fast_without_a_leader() {
    let mut cluster = Cluster::start(3, &[]).await;
    // Two of three gone: the last one cannot have a leader for long.
    let leader = cluster.wait_for_leader().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cluster.stop(leader);
    cluster.stop(others[0]);
    let survivor = others[1];
    let put_request = PutRequest {
        key: b"k".to_vec().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    // Wait out the survivor's memory of the old leader (CheckQuorum).
    let status = loop {
        let mut kv = cluster.kv(survivor).await;
        let mut r = tonic::Request::new(put_request.clone());
        r.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        match kv.put(r).await {
            Err(s) if s.message() == "etcdserver: no leader" => break s,
            other => {
                assert!(
                    started.elapsed().as_secs() < 10,
                    "never failed fast: {other:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_raises_nospace_refuses_puts_and_keeps_serving_reads_and_deletes() {
    // A one-byte quota: the store is over it from the first record on.
    let cluster = Cluster::start(1, &["--quota-backend-bytes", "1"]).await;
    cluster.wait_for_leader().await;
    let mut kv = cluster.kv(0).await;
    let put_k = || PutRequest {
        key: b"k".to_vec().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    };
    check(
        kv.put(put_k()).await,
        Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded",
    );
    let mut maintenance = common::MaintenanceClient::new(cluster.channel(0).await);
    let alarms = maintenance
        .alarm(AlarmRequest::default())
        .await
        .expect("alarm list")
        .into_inner()
        .alarms;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].alarm, AlarmType::Nospace as i32);
    let status = cluster.status(0).await.expect("status");
    assert!(
        status.errors.iter().any(|e| e.contains("NOSPACE")),
        "{status:?}"
    );
    // Reads, deletes and txns without puts still work.
    let range = kv
        .range(RangeRequest {
            key: b"k".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("reads work under NOSPACE")
        .into_inner();
    assert_eq!(range.count, 0);
    kv.delete_range(DeleteRangeRequest {
        key: b"k".to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("deletes work under NOSPACE");
    check(
        kv.txn(TxnRequest {
            success: vec![op_put("t")],
            ..Default::default()
        })
        .await,
        Code::ResourceExhausted,
        "database space exceeded",
    );
    // Disarming clears the alarm (the next put raises it again: still full).
    let disarmed = maintenance
        .alarm(AlarmRequest {
            action: alarm_request::AlarmAction::Deactivate as i32,
            member_id: alarms[0].member_id,
            alarm: AlarmType::Nospace as i32,
        })
        .await
        .expect("disarm")
        .into_inner()
        .alarms;
    assert_eq!(disarmed.len(), 1);
    let left = maintenance
        .alarm(AlarmRequest::default())
        .await
        .expect("alarm list")
        .into_inner()
        .alarms;
    assert!(left.is_empty(), "{left:?}");
}
