//! etcd's v3 gRPC API: one file per service, each a thin translation to the
//! core. What every request passes first ([`admission`]) is a tower layer
//! around all of them, and etcd's exact error codes and strings live in
//! one place ([`status`]).

pub(crate) mod admission;
mod auth;
pub(crate) mod authority;
mod cluster;
mod election;
mod forward;
pub(crate) mod handled;
mod kv;
mod lease;
mod lock;
mod maintenance;
pub(crate) mod status;
mod watch;

pub(crate) use auth::AuthService;
pub(crate) use cluster::ClusterService;
pub(crate) use election::ElectionService;
pub(crate) use forward::ForwardService;
pub(crate) use kv::KvService;
pub(crate) use lease::{keep_alive, LeaseService};
pub(crate) use lock::LockService;
pub(crate) use maintenance::MaintenanceService;
pub(crate) use watch::WatchService;

/// The largest message a service decodes: a little over the request cap,
/// so an oversized request gets etcd's error from [`admission`] rather than
/// a transport one.
fn decoding_limit(max_request_bytes: usize) -> usize {
    max_request_bytes + 512 * 1024
}
