//! `etcdserverpb.Watch`: one bidirectional stream carrying many watches.
//! Requests (create, cancel, progress) are read by a task of the stream;
//! responses come from the watch hub through the stream's bounded queue. A
//! stream opened with etcd's `hasleader` metadata (`WithRequireLeader`) is
//! ended with "etcdserver: no leader" once its member has been without a
//! leader for two election timeouts, as etcd's are.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use keel_api::etcdserverpb::watch_request::RequestUnion;
use keel_api::etcdserverpb::watch_server::{Watch, WatchServer};
use keel_api::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use keel_node::Status as NodeStatus;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::admission::HAS_LEADER_KEY;
use crate::auth::Caller;
use crate::core::{Core, ServerError};
use crate::watch::queue::{queue, QueueSender};
use crate::watch::{progress_report, StreamId, WatchHub};

/// The Watch service of one member.
pub(crate) struct WatchService {
    hub: Arc<WatchHub>,
    /// The raft node's status, for streams that require a leader.
    status: watch::Receiver<NodeStatus>,
    /// How long a member may be without a leader before such streams end.
    leaderless_grace: Duration,
    /// Bytes of responses a stream's queue holds before its watchers fall
    /// back to catching up from history.
    stream_buffer: usize,
    /// Who may watch what.
    core: Arc<Core>,
}

impl WatchService {
    /// The service of `hub`; streams requiring a leader end once `status`
    /// has shown none for `election_timeout` twice over; each stream
    /// buffers about `stream_buffer` bytes of responses.
    pub(crate) fn new(
        core: Arc<Core>,
        hub: Arc<WatchHub>,
        status: watch::Receiver<NodeStatus>,
        election_timeout: Duration,
        stream_buffer: usize,
    ) -> Self {
        WatchService {
            hub,
            status,
            leaderless_grace: election_timeout * 2,
            stream_buffer,
            core,
        }
    }

    /// The tonic service.
    pub(crate) fn into_server(self) -> WatchServer<Self> {
        WatchServer::new(self)
    }
}

/// A watch stream's responses.
pub(crate) type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let requires_leader = request
            .metadata()
            .get(HAS_LEADER_KEY)
            .is_some_and(|v| v.as_bytes() == b"true");
        let caller = Caller::of(request.extensions());
        Ok(Response::new(self.open(
            requires_leader,
            caller,
            request.into_inner(),
        )))
    }
}

impl WatchService {
    /// Serves one watch stream of `caller` whose requests come from
    /// `requests` (gRPC's or the JSON gateway's): its responses.
    pub(crate) fn open<R>(
        &self,
        requires_leader: bool,
        caller: Caller,
        requests: R,
    ) -> ResponseStream
    where
        R: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let (queue, responses) = queue(self.stream_buffer);
        let (ending, end) = mpsc::channel(1);
        let hub = self.hub.clone();
        let stream = hub.open_stream(queue.clone());
        let leader = requires_leader.then(|| (self.status.clone(), self.leaderless_grace));
        let permits = Permits {
            core: self.core.clone(),
            caller,
        };
        tokio::spawn(serve_requests(
            hub, stream, requests, queue, leader, permits, ending,
        ));
        Box::pin(responses.map(Ok).chain(ReceiverStream::new(end)))
    }
}

/// The answer to a watch that is not created: as etcd answers, created and
/// canceled at once, with the reason.
fn refused(hub: &WatchHub, reason: String) -> WatchResponse {
    WatchResponse {
        header: hub.header(hub.published()),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..WatchResponse::default()
    }
}

/// The cancel reason of a watch its user may not read: etcd's, which is
/// its gRPC error's text.
const PERMISSION_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// Who may create which watches on a stream.
struct Permits {
    core: Arc<Core>,
    caller: Caller,
}

impl Permits {
    /// Whether the stream's caller may read every key `create` watches.
    fn may_watch(&self, create: &WatchCreateRequest) -> bool {
        self.core
            .authorize_read(&self.caller, &create.key, &create.range_end)
            .is_ok()
    }
}

/// Resolves once the member has had no leader (or stopped) for `grace`.
async fn leader_lost(status: &mut watch::Receiver<NodeStatus>, grace: Duration) {
    loop {
        if status
            .wait_for(|s| s.leader.is_none() || !s.running)
            .await
            .is_err()
        {
            return;
        }
        let back = status.wait_for(|s| s.leader.is_some() && s.running);
        if tokio::time::timeout(grace, back).await.is_err() {
            return;
        }
    }
}

/// Reads a stream's requests until the client stops reading, a request
/// cannot be read (the stream ends with the reason), or (for a stream that
/// requires one) the member is left without a leader: then the stream ends
/// with etcd's error through `ending`. A client that only closes its side
/// keeps its watches, as etcd's do.
async fn serve_requests<R>(
    hub: Arc<WatchHub>,
    stream: StreamId,
    mut requests: R,
    queue: QueueSender,
    mut leader: Option<(watch::Receiver<NodeStatus>, Duration)>,
    permits: Permits,
    ending: mpsc::Sender<Result<WatchResponse, Status>>,
) where
    R: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin,
{
    let mut open = true;
    loop {
        let lost = async {
            match leader.as_mut() {
                Some((status, grace)) => leader_lost(status, *grace).await,
                None => std::future::pending().await,
            }
        };
        let next = async {
            if open {
                requests.next().await
            } else {
                std::future::pending().await
            }
        };
        let request = tokio::select! {
            request = next => request,
            _ = queue.closed() => break,
            _ = lost => {
                let _ = ending.send(Err(ServerError::NoLeader.into())).await;
                break;
            }
        };
        let request = match request {
            Some(Ok(request)) => request,
            None => {
                open = false;
                continue;
            }
            Some(Err(status)) => {
                // A frame that is no watch request (or too large): the
                // stream ends with the reason, as grpc-go's do.
                let _ = ending.send(Err(status)).await;
                break;
            }
        };
        let answered = match request.request_union {
            Some(RequestUnion::CreateRequest(create)) if !permits.may_watch(&create) => {
                queue.send(refused(&hub, PERMISSION_DENIED.into())).await
            }
            Some(RequestUnion::CreateRequest(create)) => match hub.create(stream, &create) {
                Ok((id, revision)) => {
                    let created = WatchResponse {
                        header: hub.header(revision),
                        watch_id: id,
                        created: true,
                        ..WatchResponse::default()
                    };
                    let sent = queue.send(created).await;
                    hub.activate(stream, id);
                    sent
                }
                Err(e) => queue.send(refused(&hub, e.to_string())).await,
            },
            Some(RequestUnion::CancelRequest(cancel)) => {
                if hub.cancel(stream, cancel.watch_id) {
                    let canceled = WatchResponse {
                        header: hub.header(hub.published()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..WatchResponse::default()
                    };
                    queue.send(canceled).await
                } else {
                    Ok(())
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => match hub.progress(stream) {
                Some(revision) => queue.send(progress_report(hub.header(revision))).await,
                None => Ok(()),
            },
            None => Ok(()),
        };
        if answered.is_err() {
            break;
        }
    }
    hub.close_stream(stream);
}
