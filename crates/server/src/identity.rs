//! Who this member is: its member id and its cluster's id, derived the same
//! way on every member of a new cluster and kept in the data directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// A member's and its cluster's ids, as stored in `data_dir/identity.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// This member's id (non-zero).
    pub member_id: u64,
    /// The cluster's id (non-zero).
    pub cluster_id: u64,
}

impl Identity {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("identity.toml")
    }

    /// The identity saved in `data_dir`, if the member has started before.
    pub(crate) fn load(data_dir: &Path) -> anyhow::Result<Option<Identity>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let identity: Identity =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if identity.member_id == 0 || identity.cluster_id == 0 {
            bail!("{} holds a zero id", path.display());
        }
        Ok(Some(identity))
    }

    /// Saves the identity durably (written aside, synced, then renamed).
    pub(crate) fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join("identity.toml.tmp");
        let text = toml::to_string(self).context("encoding the identity")?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()
        };
        write().with_context(|| format!("writing {}", path.display()))
    }
}

/// FNV-1a over `parts` (each followed by a separator): stable across builds
/// and platforms, unlike std's hasher. Never zero.
pub(crate) fn stable_id<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash.max(1)
}

/// The id of an initial member: from its peer URL and the cluster token.
pub(crate) fn initial_member_id(peer_url: &str, token: &str) -> u64 {
    stable_id([peer_url.as_bytes(), token.as_bytes()])
}

/// The id of a new cluster: from its initial members and token.
pub(crate) fn cluster_id(initial_cluster: &[(String, String)], token: &str) -> u64 {
    let mut urls: Vec<&str> = initial_cluster.iter().map(|(_, u)| u.as_str()).collect();
    urls.sort_unstable();
    stable_id(
        urls.into_iter()
            .map(str::as_bytes)
            .chain([token.as_bytes()]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let members = vec![
            ("a".to_string(), "http://h:1".to_string()),
            ("b".to_string(), "http://h:2".to_string()),
        ];
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(cluster_id(&members, "t"), cluster_id(&reversed, "t"));
        assert_ne!(cluster_id(&members, "t"), cluster_id(&members, "u"));
        assert_ne!(
            initial_member_id("http://h:1", "t"),
            initial_member_id("http://h:2", "t")
        );
        // Pinned, so a change of hash (which would orphan data dirs) is caught.
        assert_eq!(stable_id([&b"a"[..]]), 0x089b_c907_b544_c769);
    }

    #[test]
    fn identity_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), None);
        let id = Identity {
            member_id: 5,
            cluster_id: 9,
        };
        id.save(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), Some(id));
        std::fs::write(dir.path().join("identity.toml"), "member_id = \"x\"").unwrap();
        assert!(Identity::load(dir.path()).is_err());
    }
}
