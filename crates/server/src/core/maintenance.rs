//! Maintenance of one member: status, alarms, hashes, backups and
//! leadership moves.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use keel_api::etcdserverpb::{
    alarm_request, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentResponse,
    HashKvResponse, HashResponse, MoveLeaderResponse, ResponseHeader, StatusResponse,
};
use keel_api::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{MvccError, Store, WriteResponse};
use keel_node::{RefusedTransfer, TransferError};
use sha2::{Digest, Sha256};

use super::kv::unexpected;
use super::{blocking, Core, ServerError};

/// The etcd version keel answers as, in `Status` (and in the gateway's
/// `/version`). keel serves the etcd 3.4 API, and its watch progress
/// requests behave as etcd's since 3.5.13 and 3.4.31, the releases that
/// fixed them: Kubernetes serves consistent lists from its watch cache,
/// relying on those requests, only for an etcd at least that new.
pub(crate) const API_VERSION: &str = "3.5.13";

/// A backup of the whole store, staged in an unlinked file so its size is
/// known before the first byte is sent and memory stays bounded however
/// large it is.
pub(crate) struct Backup {
    /// The backup, positioned at its start.
    pub(crate) file: std::fs::File,
    /// Its length in bytes.
    pub(crate) size: u64,
    /// The header of the first response.
    pub(crate) header: ResponseHeader,
}

impl Core {
    /// This member's status.
    pub(crate) fn status(&self) -> StatusResponse {
        let status = self.node.status();
        let size = i64::try_from(self.store.db_size()).unwrap_or(i64::MAX);
        StatusResponse {
            header: Some(self.header()),
            version: API_VERSION.into(),
            db_size: size,
            leader: status.leader.unwrap_or(0),
            raft_index: status.commit,
            raft_term: status.term,
            raft_applied_index: status.applied,
            errors: self.store.alarms().iter().map(describe).collect(),
            db_size_in_use: size,
            is_learner: status.conf_state.learners.contains(&status.id),
        }
    }

    /// Lists, raises or clears alarms.
    pub(crate) async fn alarm(&self, request: AlarmRequest) -> Result<AlarmResponse, ServerError> {
        let action = alarm_request::AlarmAction::try_from(request.action)
            .map_err(|_| ServerError::InvalidArgument("unknown alarm action".into()))?;
        if action == alarm_request::AlarmAction::Get {
            let alarms = self
                .store
                .alarms()
                .into_iter()
                .filter(|a| {
                    (request.member_id == 0 || a.member_id == request.member_id)
                        && (request.alarm == AlarmType::None as i32 || a.alarm == request.alarm)
                })
                .collect();
            return Ok(AlarmResponse {
                header: Some(self.header()),
                alarms,
            });
        }
        let command = CommandPb {
            op: Some(Op::Alarm(request)),
            auth: None,
        };
        match self.write(command).await? {
            WriteResponse::Alarm(mut response) => {
                response.header = Some(self.header());
                Ok(response)
            }
            _ => Err(unexpected("alarm")),
        }
    }

    /// The LSM store reclaims space by its own compactions: nothing to do.
    pub(crate) fn defragment(&self) -> DefragmentResponse {
        DefragmentResponse {
            header: Some(self.header()),
        }
    }

    /// A hash of the whole key-value history.
    pub(crate) async fn hash(&self) -> Result<HashResponse, ServerError> {
        let store = self.store.clone();
        let hash = blocking("hash", move || store.hash_kv(0)).await??;
        Ok(HashResponse {
            header: Some(self.header()),
            hash: hash.hash,
        })
    }

    /// A hash of the history up to `revision` (0: all), as etcd's HashKV.
    pub(crate) async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, ServerError> {
        let store = self.store.clone();
        let hash = blocking("hash", move || store.hash_kv(revision)).await??;
        let mut header = self.header();
        header.revision = hash.revision;
        Ok(HashKvResponse {
            header: Some(header),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
        })
    }

    /// A backup of the store as etcd ships one (see [`Sha256Writer`]),
    /// staged in `scratch`.
    pub(crate) async fn backup(&self, scratch: PathBuf) -> Result<Backup, ServerError> {
        if self.store.restoring() {
            return Err(MvccError::Restoring.into());
        }
        let view = self.store.view();
        let header = self.header();
        let file = blocking("backup", move || -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(&scratch)?;
            let mut backup = Sha256Writer {
                file: tempfile_in(&scratch)?,
                hasher: Sha256::new(),
                len: 0,
            };
            Store::write_snapshot(view, &mut backup)?;
            let mut file = backup.finish()?;
            file.sync_all()?;
            file.seek(SeekFrom::Start(0))?;
            Ok(file)
        })
        .await?
        .map_err(|e| ServerError::Internal(format!("etcdserver: writing the backup: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| ServerError::Internal(format!("etcdserver: backup size: {e}")))?
            .len();
        Ok(Backup { file, size, header })
    }

    /// Hands leadership to `target` and waits until it leads.
    pub(crate) async fn move_leader(&self, target: u64) -> Result<MoveLeaderResponse, ServerError> {
        if !self.is_leader() {
            return Err(ServerError::NotLeaderToMove);
        }
        match self.node.transfer_leader(target).await {
            Ok(()) => {}
            Err(TransferError::Refused(RefusedTransfer::NotAVoter(_))) => {
                return Err(ServerError::BadLeaderTransferee)
            }
            Err(TransferError::Refused(RefusedTransfer::NotLeader { .. })) => {
                return Err(ServerError::NotLeaderToMove)
            }
            Err(TransferError::Stopped) => return Err(ServerError::Stopped),
        }
        let mut watch = self.node.watch();
        let moved = watch.wait_for(|s| s.leader == Some(target) || !s.running);
        let leader = match tokio::time::timeout(self.limits.request_timeout, moved).await {
            Ok(Ok(status)) => status.leader,
            _ => None,
        };
        if leader != Some(target) {
            return Err(ServerError::Timeout);
        }
        Ok(MoveLeaderResponse {
            header: Some(self.header()),
        })
    }
}

/// A human-readable alarm, as etcd lists it in `Status.errors`.
fn describe(alarm: &AlarmMember) -> String {
    let kind = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |a| a.as_str_name());
    format!("memberID:{} alarm:{kind} ", alarm.member_id)
}

/// Writes a backup to its staging file the way etcd ships one: the body
/// padded to a multiple of 512 bytes, then the body's SHA-256, which
/// `etcdctl snapshot save` looks for.
struct Sha256Writer {
    file: std::fs::File,
    hasher: Sha256,
    len: u64,
}

impl Sha256Writer {
    /// Pads, appends the checksum and hands back the file.
    fn finish(mut self) -> std::io::Result<std::fs::File> {
        let padding = (512 - self.len % 512) % 512;
        self.write_all(&vec![0; padding as usize])?;
        let digest = self.hasher.finalize();
        self.file.write_all(&digest)?;
        Ok(self.file)
    }
}

impl Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// An anonymous file in `dir`, removed as soon as it is closed.
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let path = dir.join(format!(
        "backup-{}-{}.tmp",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::API_VERSION;

    /// Kubernetes' rule for trusting watch progress requests (its etcd
    /// feature support checker): 3.4.31 or later in 3.4, 3.5.13 or later.
    #[test]
    fn the_reported_version_passes_kubernetes_progress_check() {
        let parts: Vec<u32> = API_VERSION
            .split('.')
            .map(|p| p.parse().expect("numeric version"))
            .collect();
        let [major, minor, patch] = parts[..] else {
            panic!("version {API_VERSION} is not major.minor.patch");
        };
        assert_eq!(major, 3);
        assert!(
            (minor == 4 && patch >= 31) || (minor == 5 && patch >= 13) || minor > 5,
            "Kubernetes would not trust progress requests from {API_VERSION}"
        );
    }
}
