//! `etcdserverpb.Maintenance`: status, alarms, hashes, backups and
//! leadership moves of one member.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use keel_mvcc::pb::etcdserverpb::*;
use keel_mvcc::pb::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{Store, WriteResponse};
use keel_node::{RefusedTransfer, TransferError};
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::errors;
use crate::rpc::maintenance_server::{Maintenance, MaintenanceServer};

/// The etcd API version keel reports in `Status`.
pub const API_VERSION: &str = "3.4.0";

/// Bytes per message of a streamed backup.
const SNAPSHOT_CHUNK: usize = 64 * 1024;

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

/// The Maintenance service of one member.
pub struct MaintenanceService {
    backend: Arc<Backend>,
    /// Where backups are staged before streaming.
    scratch_dir: PathBuf,
}

impl MaintenanceService {
    /// A service staging backups in `scratch_dir`.
    pub fn new(backend: Arc<Backend>, scratch_dir: PathBuf) -> Self {
        MaintenanceService {
            backend,
            scratch_dir,
        }
    }

    /// The tonic service.
    pub fn into_server(self) -> MaintenanceServer<Self> {
        MaintenanceServer::new(self)
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.backend.header())
    }
}

/// A human-readable alarm, as etcd lists it in `Status.errors`.
fn describe(alarm: &AlarmMember) -> String {
    let kind = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |a| a.as_str_name());
    format!("memberID:{} alarm:{kind} ", alarm.member_id)
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        self.backend.admit(&request)?;
        let request = request.into_inner();
        let action = alarm_request::AlarmAction::try_from(request.action)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm action"))?;
        if action == alarm_request::AlarmAction::Get {
            let alarms = self
                .backend
                .store
                .alarms()
                .into_iter()
                .filter(|a| {
                    (request.member_id == 0 || a.member_id == request.member_id)
                        && (request.alarm == AlarmType::None as i32 || a.alarm == request.alarm)
                })
                .collect();
            return Ok(Response::new(AlarmResponse {
                header: self.header(),
                alarms,
            }));
        }
        let command = CommandPb {
            op: Some(Op::Alarm(request)),
        };
        match self.backend.write(command).await? {
            WriteResponse::Alarm(mut response) => {
                response.header = self.header();
                Ok(Response::new(response))
            }
            _ => Err(Status::internal(
                "the store answered an alarm with another response",
            )),
        }
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.backend.admit(&request)?;
        let status = self.backend.node.status();
        let size = i64::try_from(self.backend.store.db_size()).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: self.header(),
            version: API_VERSION.into(),
            db_size: size,
            leader: status.leader.unwrap_or(0),
            raft_index: status.commit,
            raft_term: status.term,
            raft_applied_index: status.applied,
            errors: self.backend.store.alarms().iter().map(describe).collect(),
            db_size_in_use: size,
            is_learner: status.conf_state.learners.contains(&status.id),
        }))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // The LSM store reclaims space by its own compactions.
        self.backend.admit(&request)?;
        Ok(Response::new(DefragmentResponse {
            header: self.header(),
        }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.backend.admit(&request)?;
        let hash = self.backend.store.hash_kv(0).map_err(errors::mvcc)?;
        Ok(Response::new(HashResponse {
            header: self.header(),
            hash: hash.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.backend.admit(&request)?;
        let revision = request.into_inner().revision;
        let store = self.backend.store.clone();
        let hash = tokio::task::spawn_blocking(move || store.hash_kv(revision))
            .await
            .map_err(|e| Status::internal(format!("hash task failed: {e}")))?
            .map_err(errors::mvcc)?;
        let mut header = self.backend.header();
        header.revision = hash.revision;
        Ok(Response::new(HashKvResponse {
            header: Some(header),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.backend.admit(&request)?;
        if self.backend.store.restoring() {
            return Err(errors::mvcc(keel_mvcc::MvccError::Restoring));
        }
        let view = self.backend.store.view();
        let header = self.header();
        let scratch = self.scratch_dir.clone();
        // Stage the backup in an unlinked temp file: its size is known before
        // the first message, and memory stays bounded however large it is.
        let mut file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
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
        .await
        .map_err(|e| Status::internal(format!("backup task failed: {e}")))?
        .map_err(|e| Status::internal(format!("etcdserver: writing the backup: {e}")))?;
        let total = file
            .metadata()
            .map_err(|e| Status::internal(format!("etcdserver: backup size: {e}")))?
            .len();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut remaining = total;
            let mut first = true;
            loop {
                let mut blob = vec![0; SNAPSHOT_CHUNK];
                let n = match file.read(&mut blob) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "etcdserver: reading the backup: {e}"
                        ))));
                        return;
                    }
                };
                if n == 0 && !first {
                    return;
                }
                blob.truncate(n);
                remaining = remaining.saturating_sub(n as u64);
                let message = SnapshotResponse {
                    header: if first { header } else { None },
                    remaining_bytes: remaining,
                    blob: blob.into(),
                };
                first = false;
                if tx.blocking_send(Ok(message)).is_err() || n == 0 {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.backend.admit(&request)?;
        let target = request.into_inner().target_id;
        if !self.backend.is_leader() {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        match self.backend.node.transfer_leader(target).await {
            Ok(()) => {}
            Err(TransferError::Refused(RefusedTransfer::NotAVoter(_))) => {
                return Err(errors::bad_leader_transferee())
            }
            Err(TransferError::Refused(RefusedTransfer::NotLeader { .. })) => {
                return Err(Status::failed_precondition("etcdserver: not leader"))
            }
            Err(TransferError::Stopped) => {
                return Err(Status::unavailable("etcdserver: server stopped"))
            }
        }
        let mut watch = self.backend.node.watch();
        let moved = watch.wait_for(|s| s.leader == Some(target) || !s.running);
        let leader = match tokio::time::timeout(self.backend.limits.request_timeout, moved).await {
            Ok(Ok(status)) => status.leader,
            _ => None,
        };
        if leader != Some(target) {
            return Err(errors::timeout());
        }
        Ok(Response::new(MoveLeaderResponse {
            header: self.header(),
        }))
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
