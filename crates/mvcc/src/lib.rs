//! # keel-mvcc
//!
//! The replicated state of keel's metadata store.

pub mod pb;
