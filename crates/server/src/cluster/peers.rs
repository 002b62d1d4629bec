//! The peer address book: each member's peer address, kept in step with the
//! replicated member records and handed to the raft transport.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use keel_api::etcdserverpb::Member;
use keel_node::{GrpcTransport, NodeId, Transport};

use crate::config::host_port;
use crate::tls::Dialer;

/// Shared, cheap to clone.
#[derive(Clone)]
pub(crate) struct Peers {
    transport: GrpcTransport,
    dialer: Dialer,
    addresses: Arc<RwLock<BTreeMap<NodeId, String>>>,
}

impl Peers {
    /// A book starting with `addresses` (`host:port`), feeding `transport`;
    /// other traffic to peers goes through `dialer`.
    pub(crate) fn new(
        transport: GrpcTransport,
        dialer: Dialer,
        addresses: BTreeMap<NodeId, String>,
    ) -> Self {
        for (id, address) in &addresses {
            transport.set_address(*id, address.clone());
        }
        Peers {
            transport,
            dialer,
            addresses: Arc::new(RwLock::new(addresses)),
        }
    }

    /// How this member dials the peers' port (plain or TLS).
    pub(crate) fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The peer address of member `id`, if known.
    pub(crate) fn address(&self, id: NodeId) -> Option<String> {
        self.addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Takes the peer URLs of recorded members; addresses that changed are
    /// handed to the transport (which reconnects).
    pub(crate) fn update(&self, members: &[Member]) {
        let mut addresses = self.addresses.write().unwrap_or_else(|e| e.into_inner());
        for member in members {
            let Some(address) = member.peer_ur_ls.first().and_then(|u| host_port(u).ok()) else {
                continue;
            };
            if addresses.get(&member.id) != Some(&address) {
                tracing::info!(member = %format!("{:x}", member.id), %address, "peer address");
                self.transport.set_address(member.id, address.clone());
                addresses.insert(member.id, address);
            }
        }
    }
}

/// The raft transport as the server hands it to its node: addresses come
/// from the member records ([`Peers`]), which `member update` changes, so
/// the addresses keel-node recorded when members were added are not
/// applied over them.
pub(crate) struct RecordedAddresses(pub(crate) GrpcTransport);

impl Transport for RecordedAddresses {
    fn send(&self, to: NodeId, messages: Vec<keel_node::Message>) {
        self.0.send(to, messages);
    }
}
