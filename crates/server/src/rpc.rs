//! The etcd v3 gRPC services (`etcdserverpb.KV`, `Cluster`, `Maintenance`):
//! generated clients and server traits over keel-mvcc's message types.

#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));

/// keel's member-to-member services (package `keelpb`).
pub mod keelpb {
    include!(concat!(env!("OUT_DIR"), "/keelpb.rs"));
}
