//! Member-to-member traffic on the peer port, seen from the core: the peer
//! address book ([`Peers`]) and passing requests on to the leader
//! ([`Forwarder`]). The raft messages themselves are keel-node's.

mod forward;
mod peers;

pub(crate) use forward::{ForwardError, Forwarder, FORWARDED_KEY};
pub(crate) use peers::{Peers, RecordedAddresses};
