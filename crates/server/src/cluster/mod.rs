//! Member-to-member traffic on the peer port, seen from the core: the peer
//! address book ([`Peers`]) and passing requests on to the leader
//! ([`Forwarder`]; writes go in batches). The raft messages themselves are keel-node's.

mod batches;
mod forward;
mod peers;

pub(crate) use batches::{BATCH_BYTES, BATCH_COMMANDS};
pub(crate) use forward::{ForwardError, Forwarder, FORWARDED_KEY};
pub(crate) use peers::{Peers, RecordedAddresses};
