//! TLS on both ports, set up with etcd's flags: `cert_file`, `key_file`,
//! `trusted_ca_file` and `client_cert_auth` for the client port, their
//! `peer_` forms for the peer port.
//!
//! - [`TlsFiles`]: one port's files, and the rustls / tonic settings built
//!   from them; `reload` rebuilds those when the files change.
//! - [`accept`]: a port's connections, through a TLS handshake each (off
//!   the accept loop; a failed handshake drops that connection alone).
//! - `Connection`, [`ConnectionInfoLayer`], [`ClientCommonName`]: what a
//!   request learns of its connection — the verified client certificate's
//!   Common Name, the user name under auth, as in etcd.
//! - [`Dialer`], [`Channels`]: how this member reaches other members'
//!   ports (raft, forwarding, joining, the admin overview).
//! - [`PortTls`]: a port's serving settings and dialer, loaded together.

mod acceptor;
mod connection;
mod dialer;
mod files;
mod port;
mod reload;

pub(crate) use acceptor::accept;
pub(crate) use connection::ConnectionInfoLayer;
pub(crate) use dialer::{Channels, Dialer};
pub(crate) use files::TlsFiles;
pub(crate) use port::PortTls;

use x509_parser::prelude::{FromDer, X509Certificate};

#[cfg(test)]
mod tests;

/// The Common Name of the certificate a client presented on a port with
/// client certificate auth (`client_cert_auth`), verified by the port's
/// trusted CA at the handshake. With auth enabled it names the user the
/// request runs as, as etcd does.
///
/// Every request on such a connection carries it as a request extension,
/// gRPC and HTTP alike (the client port's server adds it for each request,
/// see [`ConnectionInfoLayer`]):
///
/// - a tonic handler: `request.extensions().get::<ClientCommonName>()` on
///   its `tonic::Request<T>`;
/// - a tower layer or an HTTP handler: `request.extensions().get::<ClientCommonName>()`
///   on the `http::Request`, or axum's `Option<Extension<ClientCommonName>>`
///   extractor.
///
/// It is absent on plaintext connections, on TLS ports without client
/// certificate auth, and when the certificate has no Common Name. The JSON
/// gateway calls the gRPC services in-process with `tonic::Request`s of
/// its own: what must see the name there takes it from the HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientCommonName(pub String);

impl ClientCommonName {
    /// The first Common Name in the subject of a DER certificate.
    pub(crate) fn of(certificate: &[u8]) -> Option<ClientCommonName> {
        let (_, certificate) = X509Certificate::from_der(certificate).ok()?;
        let name = certificate.subject().iter_common_name().next()?;
        Some(ClientCommonName(name.as_str().ok()?.to_string()))
    }
}
