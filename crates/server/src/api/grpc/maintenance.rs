//! `etcdserverpb.Maintenance`.

use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use keel_api::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use keel_api::etcdserverpb::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::core::{Backup, Core};

/// Bytes per message of a streamed backup.
const SNAPSHOT_CHUNK: usize = 64 * 1024;

/// The Maintenance service of one member.
pub(crate) struct MaintenanceService {
    core: Arc<Core>,
    /// Where backups are staged before streaming.
    scratch_dir: PathBuf,
}

impl MaintenanceService {
    /// A service staging backups in `scratch_dir`.
    pub(crate) fn new(core: Arc<Core>, scratch_dir: PathBuf) -> Self {
        MaintenanceService { core, scratch_dir }
    }

    /// A backup of this member's store, staged in the scratch directory.
    pub(crate) async fn backup(&self) -> Result<Backup, crate::core::ServerError> {
        self.core.backup(self.scratch_dir.clone()).await
    }

    /// The tonic service.
    pub(crate) fn into_server(self) -> MaintenanceServer<Self> {
        MaintenanceServer::new(self)
    }

    /// Refuses a request whose caller is not root (once auth is on).
    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        Ok(self
            .core
            .authorize_admin(&Caller::of(request.extensions()))?)
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        if request.get_ref().action != alarm_request::AlarmAction::Get as i32 {
            self.admin(&request)?;
        }
        Ok(Response::new(self.core.alarm(request.into_inner()).await?))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.core.status()))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.admin(&request)?;
        Ok(Response::new(self.core.defragment()))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.admin(&request)?;
        Ok(Response::new(self.core.hash().await?))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.admin(&request)?;
        let revision = request.into_inner().revision;
        Ok(Response::new(self.core.hash_kv(revision).await?))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.admin(&request)?;
        let backup = self.backup().await?;
        Ok(Response::new(Box::pin(stream_backup(backup))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.admin(&request)?;
        let target = request.into_inner().target_id;
        Ok(Response::new(self.core.move_leader(target).await?))
    }
}

/// The backup in messages of [`SNAPSHOT_CHUNK`] bytes, each saying how many
/// bytes remain after it, read on a blocking thread a few messages ahead of
/// the client.
fn stream_backup(backup: Backup) -> impl Stream<Item = Result<SnapshotResponse, Status>> {
    let Backup {
        mut file,
        size,
        header,
    } = backup;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut remaining = size;
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
                header: if first { Some(header) } else { None },
                remaining_bytes: remaining,
                blob: blob.into(),
            };
            first = false;
            if tx.blocking_send(Ok(message)).is_err() || n == 0 {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
