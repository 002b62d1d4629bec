//! keel's metrics: one Prometheus recorder per process (the `metrics`
//! facade, rendered by `metrics-exporter-prometheus` on `GET /metrics`),
//! and the names, etcd's where the concept is the same so that etcd's
//! dashboards and alerts read keel. keel-wal and keel-mvcc record their
//! disk timings under etcd's names too ([`keel_wal::FSYNC_SECONDS`],
//! [`keel_mvcc::COMMIT_SECONDS`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// 1 if this member knows a leader, else 0.
pub(crate) const HAS_LEADER: &str = "etcd_server_has_leader";
/// 1 if this member leads, else 0.
pub(crate) const IS_LEADER: &str = "etcd_server_is_leader";
/// Leaders this member has seen elected since it started.
pub(crate) const LEADER_CHANGES: &str = "etcd_server_leader_changes_seen_total";
/// The commit index (etcd: proposals committed).
pub(crate) const PROPOSALS_COMMITTED: &str = "etcd_server_proposals_committed_total";
/// The applied index (etcd: proposals applied).
pub(crate) const PROPOSALS_APPLIED: &str = "etcd_server_proposals_applied_total";
/// Writes proposed on this member and not yet answered.
pub(crate) const PROPOSALS_PENDING: &str = "etcd_server_proposals_pending";
/// Proposals that failed (no leader, leader lost, timed out, stopped).
pub(crate) const PROPOSALS_FAILED: &str = "etcd_server_proposals_failed_total";
/// The storage engine's size on disk.
pub(crate) const DB_SIZE: &str = "etcd_mvcc_db_total_size_in_bytes";
/// Watches open on this member.
pub(crate) const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
/// Watch streams open on this member.
pub(crate) const WATCH_STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
/// Leases granted through this member.
pub(crate) const LEASES_GRANTED: &str = "etcd_debugging_lease_granted_total";
/// Leases revoked through this member.
pub(crate) const LEASES_REVOKED: &str = "etcd_debugging_lease_revoked_total";
/// Keep-alives answered by this member.
pub(crate) const LEASES_RENEWED: &str = "etcd_debugging_lease_renewed_total";
/// etcd gRPC calls answered, by service, method and code.
pub(crate) const GRPC_HANDLED: &str = "grpc_server_handled_total";
/// Histogram: seconds a small request to a peer takes, by peer (`To`).
pub(crate) const PEER_ROUND_TRIP: &str = "etcd_network_peer_round_trip_time_seconds";

/// etcd's buckets for peer round trips: 0.1 ms doubling to about 3 s.
const NETWORK_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// etcd's buckets for disk timings: 1 ms doubling to about 8 s.
const DISK_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// The process's recorder, installed the first time it is asked for (the
/// server asks at start, before anything is recorded).
pub(crate) fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for name in [keel_wal::FSYNC_SECONDS, keel_mvcc::COMMIT_SECONDS] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.into()), &DISK_BUCKETS)
                .expect("the buckets are not empty");
        }
        builder = builder
            .set_buckets_for_metric(Matcher::Full(PEER_ROUND_TRIP.into()), &NETWORK_BUCKETS)
            .expect("the buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows only this one's");
        }
        handle
    })
}
