//! keel's command line beyond `serve`: a small etcd client (with leases,
//! locks and elections), and a local three-member cluster for trying
//! fail-over by hand.

pub(crate) mod bench;
pub(crate) mod client;
pub(crate) mod lease;
pub(crate) mod local_cluster;
pub(crate) mod snapshot;
