//! etcd's JSON gateway on real members: the paths etcd serves, the
//! protobuf JSON mapping as clients use it (either field name, enums by
//! name or number, 64-bit integers as strings or numbers), streamed watch
//! and keep-alive, and bad requests answered in the gateway's shape.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::http::{b64, call, post, send};
use common::Cluster;
use keel_api::etcdserverpb::RangeRequest;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_etcds_paths_in_etcds_json() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = &cluster.members[(leader + 1) % 3].spec.client;
    let addr = &cluster.members[leader].spec.client;

    // Either field name, int64 as a number or a string; answers use etcd's
    // names and strings for 64-bit integers. Writes through a follower.
    let put = post(
        follower,
        "/v3/kv/put",
        json!({"key": b64("a"), "value": b64("1")}),
    )
    .await;
    let revision: i64 = put["header"]["revision"].as_str().unwrap().parse().unwrap();
    post(
        addr,
        "/v3/kv/put",
        json!({"key": b64("b"), "value": b64("2"), "prevKv": true}),
    )
    .await;
    let range = post(
        addr,
        "/v3/kv/range",
        json!({"key": b64("a"), "range_end": b64("c")}),
    )
    .await;
    assert_eq!(range["count"], "2");
    assert_eq!(range["kvs"][0]["key"], b64("a"));
    assert_eq!(range["kvs"][0]["value"], b64("1"));
    assert_eq!(range["kvs"][0]["create_revision"], revision.to_string());
    let counted = post(
        addr,
        "/v3/kv/range",
        json!({"key": b64("a"), "rangeEnd": b64("c"), "countOnly": true, "revision": revision}),
    )
    .await;
    assert_eq!(counted["count"], "1", "{counted}");
    assert!(counted.get("kvs").is_none());
    // The same key space over gRPC.
    let over_grpc = cluster
        .kv(leader)
        .await
        .range(RangeRequest {
            key: Bytes::from_static(b"b"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&over_grpc.kvs[0].value[..], b"2");

    // A txn: enums by name and by number, both spellings of the fields.
    let txn = post(
        addr,
        "/v3/kv/txn",
        json!({
            "compare": [
                {"key": b64("a"), "result": "EQUAL", "target": "VALUE", "value": b64("1")},
                {"key": b64("b"), "result": 0, "target": 1, "create_revision": (revision + 1).to_string()}
            ],
            "success": [{"requestPut": {"key": b64("c"), "value": b64("3")}}],
            "failure": [{"request_range": {"key": b64("a")}}]
        }),
    )
    .await;
    assert_eq!(txn["succeeded"], true, "{txn}");
    assert!(txn["responses"][0]["response_put"].is_object(), "{txn}");
    let deleted = post(
        addr,
        "/v3/kv/deleterange",
        json!({"key": b64("c"), "prev_kv": true}),
    )
    .await;
    assert_eq!(deleted["deleted"], "1");
    assert_eq!(deleted["prev_kvs"][0]["value"], b64("3"));

    // Leases, keep-alive streamed.
    let lease = post(addr, "/v3/lease/grant", json!({"TTL": 30})).await;
    let id = lease["ID"].as_str().unwrap().to_string();
    post(addr, "/v3/kv/put", json!({"key": b64("l"), "lease": id})).await;
    let alive = post(addr, "/v3/lease/keepalive", json!({"ID": id})).await;
    assert_eq!(alive["result"]["TTL"], "30", "{alive}");
    let ttl = post(
        follower,
        "/v3/kv/lease/timetolive",
        json!({"ID": id, "keys": true}),
    )
    .await;
    assert_eq!(ttl["grantedTTL"], "30");
    assert_eq!(ttl["keys"][0], b64("l"));
    let leases = post(addr, "/v3/lease/leases", json!({})).await;
    assert_eq!(leases["leases"][0]["ID"], id);
    post(addr, "/v3/lease/revoke", json!({"ID": id})).await;
    let gone = post(addr, "/v3/kv/range", json!({"key": b64("l")})).await;
    assert!(gone.get("kvs").is_none(), "{gone}");

    // Cluster and maintenance.
    let members = post(follower, "/v3/cluster/member/list", json!({})).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
    let status = post(addr, "/v3/maintenance/status", json!({})).await;
    assert_eq!(status["leader"], status["header"]["member_id"]);
    post(addr, "/v3/kv/compaction", json!({"revision": revision})).await;
    let hash = post(addr, "/v3/maintenance/hash", json!({})).await;
    assert!(hash["hash"].is_number());

    // What Patroni and APISIX read first, and etcd's health.
    let (code, version) = call(addr, "GET", "/version", json!(null)).await;
    assert_eq!(code, 200);
    assert!(version["etcdserver"].as_str().unwrap().starts_with("3.5."));
    assert!(version["etcdcluster"].is_string());
    let (code, health) = call(follower, "GET", "/health", json!(null)).await;
    assert_eq!((code, health), (200, json!({"health": "true"})));
}

/// The next line of a streamed answer, as JSON.
async fn next_line(lines: &mut BufReader<TcpStream>) -> Value {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), lines.read_line(&mut line))
        .await
        .expect("a line in time")
        .expect("read");
    serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_watch_streams_history_and_live_events_as_result_lines() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let addr = cluster.members[leader].spec.client.clone();
    let follower = cluster.members[(leader + 1) % 3].spec.client.clone();
    post(
        &addr,
        "/v3/kv/put",
        json!({"key": b64("w/1"), "value": b64("old")}),
    )
    .await;

    // Watched through a follower, from revision 1, with prev_kv.
    let create = json!({"create_request": {
        "key": b64("w/"), "range_end": b64("w0"), "start_revision": "1", "prev_kv": true
    }});
    let (status, mut lines) = send(
        &follower,
        "POST",
        "/v3/watch",
        create.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let created = next_line(&mut lines).await;
    assert_eq!(created["result"]["created"], true, "{created}");
    let history = next_line(&mut lines).await;
    assert_eq!(history["result"]["events"][0]["kv"]["value"], b64("old"));
    // The body has ended; the watch goes on, as etcd's does.
    post(
        &addr,
        "/v3/kv/put",
        json!({"key": b64("w/1"), "value": b64("new")}),
    )
    .await;
    post(&addr, "/v3/kv/deleterange", json!({"key": b64("w/1")})).await;
    let mut events = Vec::new();
    while events.len() < 2 {
        let line = next_line(&mut lines).await;
        events.extend(
            line["result"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    assert_eq!(events[0]["kv"]["value"], b64("new"));
    assert_eq!(events[0]["prev_kv"]["value"], b64("old"));
    assert!(events[0].get("type").is_none(), "PUT is the default");
    assert_eq!(events[1]["type"], "DELETE");
    assert_eq!(events[1]["prev_kv"]["value"], b64("new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_requests_get_the_gateways_errors_and_lose_nothing() {
    let cluster = Cluster::start(1, &["--max-request-bytes", "10000"]).await;
    let addr = cluster.members[0].spec.client.clone();
    post(
        &addr,
        "/v3/kv/put",
        json!({"key": b64("k"), "value": b64("v")}),
    )
    .await;
    let shape = |answer: &Value| {
        assert!(answer["error"].is_string(), "{answer}");
        assert_eq!(answer["error"], answer["message"]);
        assert!(answer["code"].is_number(), "{answer}");
    };

    // Not JSON; an unknown field; a wrong type.
    for body in [
        &b"{\"key\":"[..],
        b"not json",
        b"{\"key\":\"a2V5\",\"bogus\":1}",
        b"{\"limit\":\"x\"}",
    ] {
        let (status, mut reader) = send(&addr, "POST", "/v3/kv/range", body).await;
        let mut text = String::new();
        reader.read_to_string(&mut text).await.unwrap();
        assert_eq!(status, 400, "{text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        shape(&answer);
        assert_eq!(answer["code"], 3);
    }
    // etcd's errors, with grpc-gateway's HTTP statuses.
    let (status, answer) = call(&addr, "POST", "/v3/kv/range", json!({})).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("etcdserver: key is not provided"))
    );
    let (status, answer) = call(
        &addr,
        "POST",
        "/v3/kv/put",
        json!({"key": b64("k"), "lease": "12345"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("etcdserver: requested lease not found"))
    );
    let (status, answer) = call(
        &addr,
        "POST",
        "/v3/lease/grant",
        json!({"TTL": "99999999999"}),
    )
    .await;
    assert_eq!((status, answer["code"].as_i64()), (400, Some(11)));
    shape(&answer);
    // Too large: 413 with etcd's text, as a body and as a decoded message.
    let big = json!({"key": b64("k"), "value": b64(&"v".repeat(20_000))});
    let (status, answer) = call(&addr, "POST", "/v3/kv/put", big).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("etcdserver: request is too large"))
    );
    let huge = vec![b' '; 200_000];
    let (status, _) = send(&addr, "POST", "/v3/kv/put", &huge).await;
    assert_eq!(status, 413);
    // A path nobody serves, and a method the path does not take.
    let (status, answer) = call(&addr, "POST", "/v3/nothing/here", json!({})).await;
    assert_eq!(status, 404);
    shape(&answer);
    let (status, _) = send(&addr, "GET", "/v3/kv/range", b"").await;
    assert_eq!(status, 405);
    // A watch whose request is malformed ends with an error line.
    let (status, mut reader) = send(
        &addr,
        "POST",
        "/v3/watch",
        b"{\"create_request\":{\"key\":1}}",
    )
    .await;
    assert_eq!(status, 200);
    let mut text = String::new();
    reader.read_to_string(&mut text).await.unwrap();
    let line: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(line["error"]["grpc_code"], 3, "{line}");

    // Nothing was lost, and the member still serves.
    let kept = post(&addr, "/v3/kv/range", json!({"key": b64("k")})).await;
    assert_eq!(kept["kvs"][0]["value"], b64("v"));
}

/// `GET /metrics` of a member: each sample line's name (with its labels)
/// and value.
async fn metrics_of(addr: &str) -> Vec<(String, f64)> {
    let (status, mut reader) = send(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    let mut text = String::new();
    reader.read_to_string(&mut text).await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let value = value.parse().unwrap_or_else(|e| panic!("{l:?}: {e}"));
            (name.to_string(), value)
        })
        .collect()
}

fn sample(metrics: &[(String, f64)], name: &str) -> Option<f64> {
    metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_etcds_names_and_follow_the_cluster() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let addrs: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.client.clone())
        .collect();
    let mut kv = cluster.kv(leader).await;
    kv.put(keel_api::etcdserverpb::PutRequest {
        key: Bytes::from_static(b"m"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    })
    .await
    .unwrap();
    kv.put(keel_api::etcdserverpb::PutRequest::default())
        .await
        .expect_err("an empty key is refused");
    // A watch through the gateway stays open while the metrics are read.
    let create = json!({"create_request": {"key": b64("m")}});
    let (_, mut watch) = send(
        &addrs[leader],
        "POST",
        "/v3/watch",
        create.to_string().as_bytes(),
    )
    .await;
    next_line(&mut watch).await;

    let mut leaders = 0.0;
    for (i, addr) in addrs.iter().enumerate() {
        let metrics = metrics_of(addr).await;
        assert_eq!(
            sample(&metrics, "etcd_server_has_leader"),
            Some(1.0),
            "member {i}"
        );
        leaders += sample(&metrics, "etcd_server_is_leader").unwrap();
        assert!(sample(&metrics, "etcd_server_leader_changes_seen_total").unwrap() >= 1.0);
        assert!(sample(&metrics, "etcd_server_proposals_applied_total").unwrap() >= 2.0);
        assert!(sample(&metrics, "etcd_mvcc_db_total_size_in_bytes").unwrap() > 0.0);
        assert!(sample(&metrics, "etcd_disk_wal_fsync_duration_seconds_count").unwrap() > 0.0);
        assert!(sample(&metrics, "etcd_disk_backend_commit_duration_seconds_count").unwrap() > 0.0);
    }
    assert_eq!(leaders, 1.0, "one leader among the members");
    let metrics = metrics_of(&addrs[leader]).await;
    let handled = |method: &str, code: &str| {
        sample(
            &metrics,
            &format!(
                "grpc_server_handled_total{{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"{method}\",grpc_code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(handled("Put", "OK"), Some(1.0), "{metrics:?}");
    assert_eq!(handled("Put", "InvalidArgument"), Some(1.0));
    assert_eq!(
        sample(&metrics, "etcd_debugging_mvcc_watcher_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "etcd_debugging_mvcc_watch_stream_total"),
        Some(1.0)
    );

    // Each member times a round trip to every other one, labelled as etcd
    // labels it: the peer's id in hex.
    let follower = (leader + 1) % 3;
    let id = cluster
        .status(follower)
        .await
        .unwrap()
        .header
        .unwrap()
        .member_id;
    let round_trips = format!("etcd_network_peer_round_trip_time_seconds_count{{To=\"{id:x}\"}}");
    let mut probed = None;
    for _ in 0..100 {
        probed = sample(&metrics_of(&addrs[leader]).await, &round_trips);
        if probed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probed >= Some(1.0), "no {round_trips}");
}

/// Member `i`'s resident memory, in bytes.
fn resident(cluster: &Cluster, i: usize) -> u64 {
    let pid = cluster.members[i].process.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_watch_client_that_never_reads_holds_bounded_memory_and_misses_nothing() {
    let cluster = Cluster::start(1, &[]).await;
    let addr = cluster.members[0].spec.client.clone();
    let value = "x".repeat(1 << 20);
    let put = |i: usize| {
        let cluster = &cluster;
        let value = &value;
        async move {
            common::put(cluster, 0, &format!("big/{i:03}"), value)
                .await
                .unwrap()
        }
    };
    const WRITES: usize = 300;
    // What the member itself keeps of 300 MiB of writes (its raft log
    // holds them until the next snapshot), with nobody watching.
    for i in 0..20 {
        put(i).await;
    }
    let start = resident(&cluster, 0);
    let round_one = put(0).await;
    for i in 1..WRITES {
        put(i).await;
    }
    let unwatched = resident(&cluster, 0).saturating_sub(start);
    // A watcher that falls behind is caught up from the store's history,
    // and those reads fill the store's block cache (64 MiB, bounded
    // whoever reads): a reader of the first round's history fills it now,
    // so that the second round measures what the stalled watcher holds.
    let replay = json!({"create_request": {
        "key": b64("big/"), "range_end": b64("big0"), "start_revision": round_one.to_string()
    }});
    let (status, mut history) =
        send(&addr, "POST", "/v3/watch", replay.to_string().as_bytes()).await;
    assert_eq!(status, 200);
    let mut replayed = 0;
    while replayed < WRITES {
        let line = next_line(&mut history).await;
        replayed += line["result"]["events"].as_array().map_or(0, Vec::len);
    }
    drop(history);

    // Then a client opens a watch on the prefix and reads nothing while
    // as much again goes by (400 MiB as the gateway's JSON).
    let first = put(0).await + 1;
    let create = json!({"create_request": {"key": b64("big/"), "range_end": b64("big0")}});
    let (status, mut lines) = send(&addr, "POST", "/v3/watch", create.to_string().as_bytes()).await;
    assert_eq!(status, 200);
    let start = resident(&cluster, 0);
    for i in 0..WRITES {
        put(i).await;
    }
    let watched = resident(&cluster, 0).saturating_sub(start);
    let held = watched.saturating_sub(unwatched);
    assert!(
        held < 64 << 20,
        "a watcher that reads nothing cost {} MiB ({} MiB grown with it, {} MiB without)",
        held >> 20,
        watched >> 20,
        unwatched >> 20
    );

    // When it reads at last, it gets every change, in order.
    let created = next_line(&mut lines).await;
    assert_eq!(created["result"]["created"], true, "{created}");
    let mut revisions = Vec::new();
    while revisions.len() < WRITES {
        let line = next_line(&mut lines).await;
        for event in line["result"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            revisions.push(
                event["kv"]["mod_revision"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
        }
    }
    let expected: Vec<i64> = (first..first + WRITES as i64).collect();
    assert_eq!(revisions, expected);
    eprintln!(
        "held {} MiB ({} MiB grown with it, {} MiB without)",
        held >> 20,
        watched >> 20,
        unwatched >> 20
    );
}
