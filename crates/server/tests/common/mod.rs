//! A cluster of real `keel serve` processes on loopback, driven through the
//! etcd gRPC API.

#![allow(dead_code)]

pub(crate) mod certs;
pub(crate) mod http;

use std::time::Duration;

use keel_api::etcdserverpb::*;
use keel_testkit::Flavor;
use tonic::transport::Channel;

use keel_api::etcdserverpb::kv_client::KvClient;
pub(crate) use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;

/// A keel cluster of real processes (keel-testkit's), with fast raft
/// timing and the assertions the tests share.
pub(crate) struct Cluster(keel_testkit::Cluster);

impl std::ops::Deref for Cluster {
    type Target = keel_testkit::Cluster;

    fn deref(&self) -> &keel_testkit::Cluster {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut keel_testkit::Cluster {
        &mut self.0
    }
}

impl Cluster {
    /// Starts `n` members with extra `keel serve` arguments and waits for a
    /// leader.
    pub(crate) async fn start(n: usize, extra_args: &[&str]) -> Cluster {
        let mut args = vec![
            "--heartbeat-interval-ms",
            "50",
            "--election-timeout-ms",
            "500",
        ];
        args.extend_from_slice(extra_args);
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_keel"));
        let cluster = Cluster(keel_testkit::Cluster::start(Flavor::Keel, exe, n, &args));
        cluster.wait_for_leader().await;
        cluster
    }

    /// Stops member `i` with SIGTERM and checks it exits cleanly (status 0).
    pub(crate) fn stop(&mut self, i: usize) {
        let status = self.0.stop(i);
        assert_eq!(
            status,
            Some(0),
            "member {i} did not exit cleanly; see {}",
            self.members[i].log.display()
        );
    }

    /// A channel to member `i`'s client port.
    pub(crate) async fn channel(&self, i: usize) -> Channel {
        self.0.channel(i)
    }

    /// A KV client for member `i`.
    pub(crate) async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.0.channel(i))
    }

    /// Waits until member `i` has applied at least `index`.
    pub(crate) async fn wait_applied(&self, i: usize, index: u64) {
        for _ in 0..300 {
            if self
                .status(i)
                .await
                .is_some_and(|s| s.raft_applied_index >= index)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("member {i} did not apply index {index} within 30 s");
    }

    /// Panics if member `i` has exited or its log shows a panic.
    pub(crate) fn assert_healthy(&mut self, i: usize) {
        assert!(self.members[i].process.is_some(), "member {i} not started");
        self.assert_running();
    }

    /// HashKV of member `i` at `revision`.
    pub(crate) async fn hash_kv(&self, i: usize, revision: i64) -> u32 {
        let mut m = MaintenanceClient::new(self.0.channel(i));
        m.hash_kv(HashKvRequest { revision })
            .await
            .expect("hash_kv")
            .into_inner()
            .hash
    }
}

/// Puts `key = value` through member `i`.
pub(crate) async fn put(
    cluster: &Cluster,
    i: usize,
    key: &str,
    value: &str,
) -> Result<i64, tonic::Status> {
    let response = cluster
        .kv(i)
        .await
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(response.header.map_or(0, |h| h.revision))
}

/// Every key-value under `prefix` read from member `i`.
pub(crate) async fn read_prefix(
    cluster: &Cluster,
    i: usize,
    prefix: &str,
    serializable: bool,
) -> Result<RangeResponse, tonic::Status> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    Ok(cluster
        .kv(i)
        .await
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: end.into(),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner())
}
