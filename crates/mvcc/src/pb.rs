//! The etcd v3 API messages (packages `mvccpb` and `etcdserverpb`) and keel's
//! log command, generated from `proto/etcd`.

#![allow(missing_docs, clippy::all)]

/// etcd's data model: key-values and events.
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// etcd's client API messages.
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// keel's raft log payload.
pub mod keelpb {
    include!(concat!(env!("OUT_DIR"), "/keelpb.rs"));
}
