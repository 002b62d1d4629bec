//! Reading the leases: which exist, what they were granted, and the keys
//! attached to each.

use std::sync::PoisonError;

use bytes::Bytes;
use fjall::Readable;

use crate::schema::{lease_key, Lease};
use crate::{MvccError, Store};

impl Store {
    /// Lease `id`, if it exists.
    pub fn lease(&self, id: i64) -> Option<Lease> {
        self.leases_read().get(&id).copied()
    }

    /// Every lease, by ID.
    pub fn leases(&self) -> Vec<(i64, Lease)> {
        self.leases_read()
            .iter()
            .map(|(id, lease)| (*id, *lease))
            .collect()
    }

    /// The keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Bytes>, MvccError> {
        let (snapshot, _, _) = self.read_view()?;
        let prefix = lease_key(id);
        snapshot
            .prefix(&self.inner.keyspaces.attached, prefix)
            .map(|entry| Ok(Bytes::copy_from_slice(&entry.key()?[prefix.len()..])))
            .collect()
    }

    fn leases_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<i64, Lease>> {
        self.inner
            .leases
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
