//! Reaching other members: plain `http`, or TLS presenting this member's
//! certificate and trusting the port's CA, with the settings reloaded when
//! their files change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_node::GrpcTransport;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::files::TlsFiles;
use super::reload::Reloading;

/// How this member dials one kind of port (peers', or clients' for the
/// admin overview). Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Dialer {
    /// `None`: plaintext.
    tls: Option<Arc<Reloading<ClientTlsConfig>>>,
    /// The local address connections start from (`None`: the system's
    /// choice).
    local: Option<std::net::IpAddr>,
}

impl Dialer {
    /// Dials with TLS when `files` are given, in plaintext otherwise. A
    /// certificate, key or CA file that cannot be used is an error now.
    pub(crate) fn new(files: Option<&TlsFiles>) -> anyhow::Result<Dialer> {
        let tls = files
            .map(|files| Reloading::new(files.clone(), TlsFiles::client_config))
            .transpose()?;
        Ok(Dialer {
            tls: tls.map(Arc::new),
            local: None,
        })
    }

    /// Connections start from `listen`'s address (`host:port`) when it is
    /// a specific IP: peers, and anything between them, then see which
    /// member a connection comes from.
    pub(crate) fn dialing_from(mut self, listen: &str) -> Dialer {
        self.local = listen
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        self
    }

    /// An endpoint for `address` (`host:port`), with the TLS settings of
    /// the moment.
    pub(crate) fn endpoint(&self, address: &str) -> Result<Endpoint, tonic::transport::Error> {
        let endpoint = match &self.tls {
            Some(tls) => {
                Endpoint::from_shared(format!("https://{address}"))?.tls_config(tls.current().1)?
            }
            None => Endpoint::from_shared(format!("http://{address}"))?,
        };
        Ok(endpoint.local_address(self.local))
    }

    /// Changes whenever the TLS settings are reloaded: channels made
    /// before hold the old ones.
    fn generation(&self) -> u64 {
        self.tls.as_ref().map_or(0, |tls| tls.generation())
    }

    /// keel-node's raft transport for cluster `cluster_id`, dialing peers
    /// this way (its TLS settings are asked for at every connection).
    pub(crate) fn raft_transport(&self, cluster_id: u64) -> GrpcTransport {
        let mut transport = GrpcTransport::new(cluster_id, Default::default());
        if let Some(ip) = self.local {
            transport = transport.bind_to(ip);
        }
        match &self.tls {
            Some(tls) => {
                let tls = tls.clone();
                transport.with_tls(move || tls.current().1)
            }
            None => transport,
        }
    }
}

/// Channels to other members, one per address, made on first use and
/// made again once the dialer's TLS settings were reloaded.
pub(crate) struct Channels {
    dialer: Dialer,
    /// Timeouts and the like, for each new endpoint.
    tune: fn(Endpoint) -> Endpoint,
    cache: Mutex<HashMap<String, (u64, Channel)>>,
}

impl Channels {
    /// Channels dialed by `dialer`, each endpoint adjusted by `tune`.
    pub(crate) fn new(dialer: Dialer, tune: fn(Endpoint) -> Endpoint) -> Self {
        Channels {
            dialer,
            tune,
            cache: Mutex::default(),
        }
    }

    /// The channel to `address` (`host:port`), connected lazily.
    pub(crate) fn get(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let generation = self.dialer.generation();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, channel)) = cache.get(address) {
            if *made == generation {
                return Ok(channel.clone());
            }
        }
        let channel = (self.tune)(self.dialer.endpoint(address)?).connect_lazy();
        cache.insert(address.to_string(), (generation, channel.clone()));
        Ok(channel)
    }
}
