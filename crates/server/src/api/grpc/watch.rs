//! `etcdserverpb.Watch`: one bidirectional stream carrying many watches.
//! Requests (create, cancel, progress) are read by a task of the stream;
//! responses come from the watch hub through the stream's bounded queue.

use std::pin::Pin;
use std::sync::Arc;

use keel_api::etcdserverpb::watch_request::RequestUnion;
use keel_api::etcdserverpb::watch_server::{Watch, WatchServer};
use keel_api::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::watch::{progress_report, StreamId, WatchHub};

/// Responses a stream's queue holds before its watchers fall back to
/// catching up from history.
const STREAM_QUEUE: usize = 128;

/// The Watch service of one member.
pub(crate) struct WatchService(pub(crate) Arc<WatchHub>);

impl WatchService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> WatchServer<Self> {
        WatchServer::new(self)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (queue, responses) = mpsc::channel(STREAM_QUEUE);
        let hub = self.0.clone();
        let stream = hub.open_stream(queue.clone());
        tokio::spawn(serve_requests(hub, stream, request.into_inner(), queue));
        let responses = tokio_stream::wrappers::ReceiverStream::new(responses).map(Ok);
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Reads a stream's requests until the client ends it or stops reading.
async fn serve_requests(
    hub: Arc<WatchHub>,
    stream: StreamId,
    mut requests: Streaming<WatchRequest>,
    queue: mpsc::Sender<WatchResponse>,
) {
    loop {
        let request = tokio::select! {
            request = requests.message() => request,
            _ = queue.closed() => break,
        };
        let Ok(Some(request)) = request else {
            break;
        };
        let answered = match request.request_union {
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
                Err(e) => {
                    let refused = WatchResponse {
                        header: hub.header(hub.published()),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: e.to_string(),
                        ..WatchResponse::default()
                    };
                    queue.send(refused).await
                }
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
