//! keel's `Forward` service on the peer port: the leader's side of the
//! writes another member passed on, a batch at a time.

use std::sync::Arc;

use futures_util::future::join_all;
use keel_api::keelpb::forward_server::{Forward, ForwardServer};
use keel_api::keelpb::{answer, Answer, Answers, Command, Proposals, Refusal};
use tonic::{Request, Response, Status};

use super::decoding_limit;
use crate::cluster::{BATCH_BYTES, BATCH_COMMANDS};
use crate::core::{Core, ServerError};

/// Serves forwarded writes.
pub(crate) struct ForwardService(pub(crate) Arc<Core>);

impl ForwardService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> ForwardServer<Self> {
        let limit = decoding_limit(self.0.limits.max_request_bytes) + BATCH_BYTES;
        ForwardServer::new(self).max_decoding_message_size(limit)
    }

    /// Proposes one forwarded write and waits for its answer.
    async fn answer(&self, command: Command) -> Answer {
        let outcome = self
            .0
            .propose_forwarded(command)
            .await
            .and_then(|response| response.into_outcome().map_err(ServerError::from));
        let result = match outcome {
            Ok(outcome) => answer::Result::Outcome(outcome),
            Err(e) => {
                let status = Status::from(e);
                answer::Result::Refusal(Refusal {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                })
            }
        };
        Answer {
            result: Some(result),
        }
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    /// Proposes every write of the batch at once (they share the leader's
    /// next rounds) and answers each, in order.
    async fn propose(&self, request: Request<Proposals>) -> Result<Response<Answers>, Status> {
        let commands = request.into_inner().commands;
        if commands.len() > BATCH_COMMANDS {
            return Err(Status::invalid_argument(format!(
                "a forwarded batch holds at most {BATCH_COMMANDS} writes, not {}",
                commands.len()
            )));
        }
        let answers = join_all(commands.into_iter().map(|c| self.answer(c))).await;
        Ok(Response::new(Answers { answers }))
    }
}
