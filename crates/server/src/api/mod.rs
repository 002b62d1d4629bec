//! The edges through which the core is reached. Each decodes requests,
//! calls the core (`crate::core`) and encodes what it returns; nothing else
//! in the server imports them.
//!
//! - [`grpc`]: etcd's v3 gRPC services on the client port, and keel's
//!   member-to-member services on the peer port.
//!
//! etcd's JSON gateway, the admin API, metrics and the dashboard will be
//! `api/http/`, over the same core and the same error mapping.

pub(crate) mod grpc;
