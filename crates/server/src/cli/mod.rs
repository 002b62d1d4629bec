//! keel's command line beyond `serve`: a small etcd client, and a local
//! three-member cluster for trying fail-over by hand.

pub(crate) mod client;
pub(crate) mod local_cluster;
