//! # keel-mvcc
//!
//! The replicated state of keel's metadata store: an etcd-style
//! multi-version key-value store on fjall. Every write bumps a store-wide
//! revision; every key keeps its versions until compaction, so reads can
//! look at the past. Commands come from the raft log ([`Store::apply_batch`])
//! and are applied atomically together with the applied index; reads are
//! served from consistent storage snapshots ([`Store::range`]). The whole
//! store streams out and back in for raft snapshots
//! ([`Store::write_snapshot`], [`Store::restore`]).

mod apply;
pub mod auth;
mod command;
mod compaction;
mod encoding;
mod error;
mod events;
mod leases;
pub mod quota;
mod range;
mod schema;
mod snapshot;
mod store;
pub mod validate;

pub use apply::{txn_is_read_only, txn_is_serializable, Applied};
pub use command::{Command, WriteResponse};
pub use encoding::MAX_KEY_BYTES;
pub use error::MvccError;
pub use events::History;
pub use range::{prefix_end, Span};
pub use schema::Lease;

/// The `metrics` histogram of each applied batch's commit to the storage
/// engine, in seconds (etcd's name for its backend commits).
pub const COMMIT_SECONDS: &str = "etcd_disk_backend_commit_duration_seconds";
pub use store::{HashKv, Store, StoreOptions, StoreView};
