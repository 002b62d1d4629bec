//! # keel-api
//!
//! The wire types of keel, generated once from `proto/etcd`: etcd's v3 API
//! with the same packages, names and field numbers as etcd (so every etcd
//! client speaks to keel), and keel's own log payload and member-to-member
//! service. Messages use `bytes::Bytes` for every `bytes` field, so payloads
//! are not copied between the wire, the raft log and the store.

/// etcd's data model: key-values and events (`mvccpb`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// etcd's client API (`etcdserverpb`): its messages, and the services keel
/// serves (clients and servers).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// keel's own (`keelpb`): the raft log command, what applying it returned,
/// and the `Forward` service members use to hand writes to the leader.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod keelpb {
    include!(concat!(env!("OUT_DIR"), "/keelpb.rs"));
}

/// etcd's lock service (`v3lockpb`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// etcd's leader election service (`v3electionpb`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}
