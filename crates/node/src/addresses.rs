//! The address book: every member's address, replicated with the
//! membership itself. A membership change that adds a node carries its
//! address in its log entry (the entry's context, see
//! [`keel_raft::ConfChange::encode_with_context`]); the bootstrap entry
//! carries the initial members'; and each snapshot starts with the book as
//! of its index. So every node, however it caught up, knows every member's
//! address: for its transport, for `address_of` and for the leader's
//! address in `NotLeader`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, RwLock};

use keel_raft::NodeId;

/// The most bytes a book may take in a snapshot: far more than any
/// cluster's addresses, small enough to refuse a corrupt length.
const MAX_BOOK_BYTES: u32 = 16 << 20;

/// Every member's address as this node knows it. Shared between a node's
/// handle and its replica; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AddressBook(Arc<RwLock<BTreeMap<NodeId, String>>>);

impl AddressBook {
    /// A book holding `addresses`.
    pub fn new(addresses: BTreeMap<NodeId, String>) -> Self {
        AddressBook(Arc::new(RwLock::new(addresses)))
    }

    /// Member `id`'s address, if known.
    pub fn get(&self, id: NodeId) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every address.
    pub fn all(&self) -> BTreeMap<NodeId, String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records `address` for `id`; true if it is new or changed.
    pub(crate) fn set(&self, id: NodeId, address: String) -> bool {
        let mut book = self.0.write().unwrap_or_else(|e| e.into_inner());
        if book.get(&id) == Some(&address) {
            return false;
        }
        book.insert(id, address);
        true
    }

    /// Forgets a removed member.
    pub(crate) fn remove(&self, id: NodeId) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Addresses as a membership change's context.
pub(crate) fn encode(addresses: &BTreeMap<NodeId, String>) -> Vec<u8> {
    postcard::to_allocvec(addresses).unwrap_or_default()
}

/// The addresses a membership change's context carries (none if it
/// carries no context, or one keel-node did not write).
pub(crate) fn decode(context: &[u8]) -> BTreeMap<NodeId, String> {
    if context.is_empty() {
        return BTreeMap::new();
    }
    postcard::from_bytes(context).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a membership change carries an unreadable address context");
        BTreeMap::new()
    })
}

/// Writes the book at the head of a snapshot's data: its length, then it.
pub(crate) fn write_to_snapshot(
    addresses: &BTreeMap<NodeId, String>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let bytes = encode(addresses);
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(&bytes)
}

/// Reads the book at the head of a snapshot's data, leaving `input` at the
/// state machine's part.
pub(crate) fn read_from_snapshot(input: &mut dyn Read) -> Result<BTreeMap<NodeId, String>, String> {
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|e| format!("reading the snapshot's address book: {e}"))?;
    let len = u32::from_le_bytes(len);
    if len > MAX_BOOK_BYTES {
        return Err(format!("the snapshot's address book claims {len} bytes"));
    }
    let mut bytes = vec![0u8; len as usize];
    input
        .read_exact(&mut bytes)
        .map_err(|e| format!("reading the snapshot's address book: {e}"))?;
    postcard::from_bytes(&bytes).map_err(|e| format!("decoding the snapshot's address book: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_round_trips_through_a_snapshot_head_and_garbage_is_refused() {
        let book: BTreeMap<NodeId, String> =
            [(1, "10.0.0.1:7000".to_string()), (9, "h:9".to_string())].into();
        let mut data = Vec::new();
        write_to_snapshot(&book, &mut data).unwrap();
        data.extend_from_slice(b"state");
        let mut input = &data[..];
        assert_eq!(read_from_snapshot(&mut input).unwrap(), book);
        assert_eq!(input, b"state", "left at the state machine's part");
        assert!(read_from_snapshot(&mut &[0xff, 0xff, 0xff, 0xff][..]).is_err());
        assert!(read_from_snapshot(&mut &data[..3]).is_err());
        assert_eq!(decode(&encode(&book)), book);
        assert!(decode(b"\xff\xff\xff").is_empty());
    }

    #[test]
    fn setting_an_unchanged_address_reports_no_change() {
        let book = AddressBook::default();
        assert!(book.set(2, "a:1".into()));
        assert!(!book.set(2, "a:1".into()));
        assert!(book.set(2, "a:2".into()));
        assert_eq!(book.get(2).as_deref(), Some("a:2"));
        book.remove(2);
        assert_eq!(book.get(2), None);
    }
}
