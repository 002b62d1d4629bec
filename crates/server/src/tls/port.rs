//! One port's TLS, both ways: how this member serves it, and how it dials
//! the same port of other members.

use super::acceptor::{server_tls, ServerTls};
use super::dialer::Dialer;
use super::files::TlsFiles;

/// A port's TLS settings, loaded; plaintext both ways without files.
pub(crate) struct PortTls {
    /// What [`accept`](super::accept) takes; `None`: plaintext.
    pub serving: Option<ServerTls>,
    /// How other members' same port is reached.
    pub dialer: Dialer,
}

impl PortTls {
    /// Reads `files` (if any). A file missing or unusable is an error now,
    /// naming it, so that a member never starts half configured.
    pub(crate) fn load(files: Option<&TlsFiles>) -> anyhow::Result<PortTls> {
        Ok(PortTls {
            serving: files.map(server_tls).transpose()?,
            dialer: Dialer::new(files)?,
        })
    }
}
