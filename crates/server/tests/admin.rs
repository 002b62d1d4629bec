//! The admin API (`/api/v1`) on real members: the cluster view with each
//! member's raft progress, the key browser and a key's history, the
//! actions (move the leader, promote and remove a member, compact, download
//! a backup), errors a person can act on, and every path of the OpenAPI
//! document served.

mod common;

use bytes::Bytes;
use common::http::{b64, call, send};
use common::Cluster;
use keel_api::etcdserverpb::PutRequest;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// A GET that must succeed.
async fn get(addr: &str, path: &str) -> Value {
    let (status, answer) = call(addr, "GET", path, Value::Null).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// The member entry named `name` in a cluster view.
fn member<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no member {name} in {view}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_the_cluster_and_its_keys_and_acts_on_them() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let addr = cluster.members[follower].spec.client.clone();
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    let name = |i: usize| names[i].clone();

    // The cluster as a follower sees it, each member asked for its own
    // progress.
    // Members publish their names and client URLs once they run.
    let mut view = Value::Null;
    for _ in 0..100 {
        view = get(&addr, "/api/v1/cluster").await;
        let published = view["members"].as_array().unwrap().iter();
        if published.filter(|m| m["role"] != "unreachable").count() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(view["members"].as_array().unwrap().len(), 3, "{view}");
    let leader_id = member(&view, &name(leader))["id"].clone();
    assert_eq!(view["leader"], leader_id, "{view}");
    assert_eq!(view["served_by"], member(&view, &name(follower))["id"]);
    assert_eq!(member(&view, &name(leader))["role"], "leader");
    for i in [follower, other] {
        let m = member(&view, &name(i));
        assert_eq!(m["role"], "follower", "{m}");
        assert!(m["lag"].is_u64() && m["term"].as_u64() >= Some(1), "{m}");
        assert!(m["applied"].as_u64() <= m["commit"].as_u64(), "{m}");
        assert!(m["error"].is_null());
    }

    // Keys by prefix, a page at a time; one key; its history newest first.
    for (key, value) in [("app/a", "1"), ("app/b", "2"), ("app/a", "3"), ("zed", "z")] {
        common::put(&cluster, leader, key, value).await.unwrap();
    }
    let binary = Bytes::from_static(&[0xff, 0x00, b'k']);
    cluster
        .kv(leader)
        .await
        .put(PutRequest {
            key: binary.clone(),
            value: Bytes::from_static(b"bin"),
            ..Default::default()
        })
        .await
        .unwrap();
    // The follower serves what it has applied: wait until it has them all.
    let mut page = Value::Null;
    for _ in 0..50 {
        page = get(&addr, "/api/v1/keys?prefix=app%2F&limit=1").await;
        if page["count"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(page["count"], 2, "{page}");
    assert_eq!(page["more"], true);
    assert_eq!(page["keys"][0]["key"], b64("app/a"));
    assert_eq!(page["keys"][0]["version"], 2);
    let page = get(&addr, "/api/v1/keys?prefix=app%2F&after=app%2Fa").await;
    assert_eq!(page["keys"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["keys"][0]["key"], b64("app/b"));
    assert_eq!(page["more"], false);
    let all = get(&addr, "/api/v1/keys").await;
    assert_eq!(all["count"], 4, "{all}");
    let one = get(&addr, "/api/v1/key?key=app%2Fa").await;
    assert_eq!(one["kv"]["value"], b64("3"), "{one}");
    let raw = get(&addr, "/api/v1/key?key=%FF%00k").await;
    assert_eq!(raw["kv"]["value"], b64("bin"), "{raw}");
    common::put(&cluster, leader, "app/a", "4").await.unwrap();
    let deleted = cluster
        .kv(leader)
        .await
        .delete_range(keel_api::etcdserverpb::DeleteRangeRequest {
            key: Bytes::from_static(b"app/a"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deleted_at = deleted.header.unwrap().revision;
    let history = get(
        &cluster.members[leader].spec.client,
        "/api/v1/key/history?key=app%2Fa",
    )
    .await;
    let kinds: Vec<(&str, Value)> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["value"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("DELETE", json!("")),
            ("PUT", json!(b64("4"))),
            ("PUT", json!(b64("3"))),
            ("PUT", json!(b64("1"))),
        ],
        "{history}"
    );
    assert_eq!(history["changes"][0]["mod_revision"], deleted_at);
    let limited = get(
        &cluster.members[leader].spec.client,
        "/api/v1/key/history?key=app%2Fa&limit=2",
    )
    .await;
    assert_eq!(limited["changes"].as_array().unwrap().len(), 2);
    assert_eq!(limited["more"], true);

    // Compaction drops the older versions from the history.
    let second_put = history["changes"][2]["mod_revision"].as_i64().unwrap();
    let (status, compacted) = call(
        &addr,
        "POST",
        "/api/v1/compact",
        json!({"revision": second_put}),
    )
    .await;
    assert_eq!(status, 200, "{compacted}");
    let history = get(
        &cluster.members[leader].spec.client,
        "/api/v1/key/history?key=app%2Fa",
    )
    .await;
    assert_eq!(history["compact_revision"], second_put, "{history}");
    assert_eq!(history["changes"].as_array().unwrap().len(), 3, "{history}");

    // A backup to download: the file etcdctl writes, its SHA-256 last.
    let (status, mut body) = send(&addr, "GET", "/api/v1/backup", b"").await;
    assert_eq!(status, 200);
    let mut backup = Vec::new();
    body.read_to_end(&mut backup).await.unwrap();
    assert!(
        backup.len() > 32 && (backup.len() - 32) % 512 == 0,
        "{}",
        backup.len()
    );
    let (data, sum) = backup.split_at(backup.len() - 32);
    assert_eq!(Sha256::digest(data).as_slice(), sum);

    // Leadership moved through a follower to the other follower.
    let target = member(&view, &name(other))["id"].clone();
    let (status, moved) = call(
        &addr,
        "POST",
        "/api/v1/cluster/leader",
        json!({"member": target}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["leader"], target);
    assert_eq!(cluster.wait_for_leader().await, other);

    // Errors say what is wrong.
    for (method, path, body, status, error) in [
        (
            "POST",
            "/api/v1/cluster/leader",
            json!({"member": "1"}),
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/cluster/leader",
            json!({"member": "xyz"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/cluster/leader",
            json!({"membr": "1"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/compact",
            json!({"revision": 1_000_000}),
            400,
            "bad_request",
        ),
        ("GET", "/api/v1/key", Value::Null, 400, "bad_request"),
        (
            "GET",
            "/api/v1/key?key=missing",
            Value::Null,
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/keys?limit=0",
            Value::Null,
            400,
            "bad_request",
        ),
        ("DELETE", "/api/v1/members/1", Value::Null, 404, "not_found"),
    ] {
        let (got, answer) = call(&addr, method, path, body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(error)),
            "{path}: {answer}"
        );
        assert!(!answer["message"].as_str().unwrap().is_empty(), "{answer}");
    }

    // A member that is down is shown as unreachable, not left out.
    cluster.stop(follower);
    let view = get(&cluster.members[other].spec.client, "/api/v1/cluster").await;
    let down = member(&view, &name(follower));
    assert_eq!(down["role"], "unreachable", "{down}");
    assert!(
        down["error"].is_string() && down["term"].is_null(),
        "{down}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_of_the_openapi_document_is_served() {
    let cluster = Cluster::start(1, &[]).await;
    let addr = &cluster.members[0].spec.client;
    let served = get(addr, "/api/v1/openapi.json").await;
    let file: Value =
        serde_json::from_str(include_str!("../../../docs/admin-api.openapi.json")).unwrap();
    assert_eq!(served, file);
    let paths = file["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{paths:?}");
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "1");
            let method = method.to_uppercase();
            let (status, mut body) = send(addr, &method, &concrete, b"{}").await;
            let mut text = Vec::new();
            body.read_to_end(&mut text).await.unwrap();
            let text = String::from_utf8_lossy(&text);
            assert!(
                !text.contains("no such path") && status != 405,
                "{method} {path} is documented but not served: {status} {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_promotes_a_learner_and_removes_a_member() {
    let mut cluster = Cluster::start(1, &[]).await;
    let addr = cluster.members[0].spec.client.clone();
    let mut kv = cluster.kv(0).await;
    for i in 0..20 {
        kv.put(PutRequest {
            key: Bytes::from(format!("k{i}")),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let (learner, id) = cluster.add_member(0, true).await.expect("member add");
    let id = format!("{id:x}");

    // The learner is shown as one until it is promoted, which waits for it
    // to catch up (etcd refuses a learner that is behind).
    let mut promoted = (0, Value::Null);
    for _ in 0..150 {
        let view = get(&addr, "/api/v1/cluster").await;
        let shown = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no learner {id} in {view}"));
        assert_eq!(shown["is_learner"], true, "{shown}");
        promoted = call(
            &addr,
            "POST",
            &format!("/api/v1/members/{id}/promote"),
            Value::Null,
        )
        .await;
        if promoted.0 == 200 {
            break;
        }
        assert!(
            promoted.1["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{promoted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(promoted.0, 200, "{:?}", promoted.1);
    assert_eq!(promoted.1["promoted"], id.as_str());
    let view = get(&addr, "/api/v1/cluster").await;
    assert_eq!(view["members"].as_array().unwrap().len(), 2, "{view}");
    let voter = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap();
    assert_eq!(voter["is_learner"], false, "{voter}");

    // Promoting a voter is refused with a message.
    let (status, again) = call(
        &addr,
        "POST",
        &format!("/api/v1/members/{id}/promote"),
        Value::Null,
    )
    .await;
    assert!((400..500).contains(&status), "{status} {again}");
    assert!(again["message"].as_str().is_some_and(|m| !m.is_empty()));

    // Removing it leaves one member, which keeps serving writes.
    let (status, removed) = call(
        &addr,
        "DELETE",
        &format!("/api/v1/members/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removed"], id.as_str());
    let view = get(&addr, "/api/v1/cluster").await;
    assert_eq!(view["members"].as_array().unwrap().len(), 1, "{view}");
    kv.put(PutRequest {
        key: Bytes::from_static(b"after"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    })
    .await
    .unwrap();
    cluster.kill(learner);
}
