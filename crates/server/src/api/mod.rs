//! The edges through which the core is reached. Each decodes requests,
//! calls the core (`crate::core`) and encodes what it returns; nothing else
//! in the server imports them.
//!
//! - [`grpc`]: etcd's v3 gRPC services on the client port, and keel's
//!   member-to-member services on the peer port.
//!
//! - [`http`]: on the client port too, etcd's JSON gateway (through the
//!   same services, so the same error mapping), `/version` and `/health`.
//!   The admin API, metrics and the dashboard will join it.

pub(crate) mod grpc;
pub(crate) mod http;
