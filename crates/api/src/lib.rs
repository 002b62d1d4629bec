//! # keel-api
//!
//! The wire types of keel, generated once from `proto/etcd`: etcd's v3 API
//! with the same packages, names and field numbers as etcd (so every etcd
//! client speaks to keel), and keel's own log payload and member-to-member
//! service. Messages use `bytes::Bytes` for every `bytes` field, so payloads
//! are not copied between the wire, the raft log and the store. etcd's
//! messages also implement serde's traits with the protobuf JSON mapping
//! (what etcd's JSON gateway speaks: original field names on output,
//! either name on input, 64-bit integers as strings, bytes as base64).

/// etcd's data model: key-values and events (`mvccpb`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's users, roles and permissions (`authpb`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's client API (`etcdserverpb`): its messages, and the services keel
/// serves (clients and servers).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
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
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's leader election service (`v3electionpb`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
