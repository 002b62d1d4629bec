//! The edges through which the core is reached. Each decodes requests,
//! calls the core (`crate::core`) and encodes what it returns; nothing else
//! in the server imports them.
//!
//! - [`grpc`]: etcd's v3 gRPC services on the client port, and keel's
//!   member-to-member services on the peer port.
//!
//! - [`http`]: on the client port too, etcd's JSON gateway (through the
//!   same services, so the same error mapping), `/version` and `/health`.
//!   keel's admin API, `/metrics` and the dashboard.
//!
//! - [`coalesced_writes`]: what every client connection's bytes pass through
//!   on the way out, so one scheduler round's responses share a `writev`.

pub(crate) mod coalesced_writes;
pub(crate) mod grpc;
pub(crate) mod http;
