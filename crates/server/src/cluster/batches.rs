//! Writes on their way to the leader, sent in batches. A write goes at once
//! while fewer than [`IN_FLIGHT`] batches to its leader are out; otherwise
//! it waits and leaves with the next batch, together with every write that
//! queued meanwhile (up to [`BATCH_COMMANDS`] writes or [`BATCH_BYTES`]).
//! There is no timer: a lone write never waits, and under load one call
//! carries what arrived during one leader round instead of one call per
//! write.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keel_api::keelpb::forward_client::ForwardClient;
use keel_api::keelpb::{answer, Answer, Command, Proposals};
use keel_mvcc::{MvccError, WriteResponse};
use keel_node::NodeId;
use prost::Message;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::ForwardError;

/// The most writes one forwarded batch holds.
pub(crate) const BATCH_COMMANDS: usize = 512;
/// A batch takes no more writes once their encoded size reaches this (a
/// single larger write still goes, alone).
pub(crate) const BATCH_BYTES: usize = 1 << 20;
/// Batches to one leader on their way at once.
const IN_FLIGHT: usize = 2;

/// Where a write's answer goes.
type Reply = oneshot::Sender<Result<WriteResponse, ForwardError>>;

/// A write waiting for a batch.
struct Waiting {
    command: Command,
    deadline: Instant,
    reply: Reply,
}

/// The writes waiting for one leader, and how many batches are out.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    in_flight: usize,
}

/// The queues of writes for each leader.
#[derive(Clone, Default)]
pub(crate) struct Batches(Arc<Mutex<HashMap<NodeId, Queue>>>);

impl Batches {
    /// Sends `command` to `leader` (over `channel`) with the next batch and
    /// waits for its answer until `deadline`.
    pub(crate) async fn propose(
        &self,
        leader: NodeId,
        channel: Channel,
        command: Command,
        deadline: Instant,
    ) -> Result<WriteResponse, ForwardError> {
        let (reply, answer) = oneshot::channel();
        let batch = {
            let mut queues = self.lock();
            let queue = queues.entry(leader).or_default();
            queue.waiting.push_back(Waiting {
                command,
                deadline,
                reply,
            });
            (queue.in_flight < IN_FLIGHT).then(|| {
                queue.in_flight += 1;
                queue.take_batch()
            })
        };
        if let Some(batch) = batch {
            tokio::spawn(
                self.clone()
                    .send_until_empty(leader, ForwardClient::new(channel), batch),
            );
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ForwardError::Unanswered(
                "the forwarded write's batch was dropped".into(),
            )),
            Err(_) => Err(ForwardError::Unanswered(
                "no answer from the leader before the request timeout".into(),
            )),
        }
    }

    /// Sends `batch`, then the batches that queued behind it, until the
    /// queue is empty.
    async fn send_until_empty(
        self,
        leader: NodeId,
        mut client: ForwardClient<Channel>,
        mut batch: Vec<Waiting>,
    ) {
        loop {
            send(&mut client, batch).await;
            let mut queues = self.lock();
            let Some(queue) = queues.get_mut(&leader) else {
                return;
            };
            if queue.waiting.is_empty() {
                queue.in_flight -= 1;
                if queue.in_flight == 0 {
                    queues.remove(&leader);
                }
                return;
            }
            batch = queue.take_batch();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, Queue>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Queue {
    /// The next batch: the oldest writes whose callers still wait, within
    /// the batch limits.
    fn take_batch(&mut self) -> Vec<Waiting> {
        let now = Instant::now();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.waiting.front() {
            // Its caller gave up: never sent, so it cannot apply.
            if next.deadline <= now || next.reply.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let size = next.command.encoded_len();
            let full = batch.len() == BATCH_COMMANDS || bytes + size > BATCH_BYTES;
            if full && !batch.is_empty() {
                break;
            }
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            bytes += size;
            batch.push(next);
        }
        batch
    }
}

/// Sends one batch and hands each write its answer.
async fn send(client: &mut ForwardClient<Channel>, batch: Vec<Waiting>) {
    let Some(deadline) = batch.iter().map(|w| w.deadline).max() else {
        return;
    };
    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|w| (w.command, w.reply)).unzip();
    let sent = commands.len();
    let mut request = Request::new(Proposals { commands });
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let answers = match client.propose(request).await {
        Ok(answers) => answers.into_inner().answers,
        Err(status) => return fail_all(replies, ForwardError::from(status)),
    };
    if answers.len() != sent {
        let nonsense = ForwardError::Mvcc(MvccError::Corrupt(format!(
            "the leader answered {} of {sent} forwarded writes",
            answers.len()
        )));
        return fail_all(replies, nonsense);
    }
    for (answer, reply) in answers.into_iter().zip(replies) {
        let _ = reply.send(answer_of(answer));
    }
}

/// Hands every write of a batch the same failure.
fn fail_all(replies: Vec<Reply>, error: ForwardError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

/// One write's answer from its wire form.
fn answer_of(answer: Answer) -> Result<WriteResponse, ForwardError> {
    match answer.result {
        Some(answer::Result::Outcome(outcome)) => Ok(WriteResponse::from_outcome(outcome)?),
        Some(answer::Result::Refusal(refusal)) => Err(ForwardError::from(Status::new(
            Code::from_i32(refusal.code),
            refusal.message,
        ))),
        None => Err(ForwardError::Mvcc(MvccError::Corrupt(
            "the leader sent an empty answer to a forwarded write".into(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use keel_api::etcdserverpb::PutRequest;
    use keel_api::keelpb::command::Op;

    use super::*;

    fn put(value_bytes: usize) -> Command {
        Command {
            op: Some(Op::Put(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![b'v'; value_bytes]),
                ..Default::default()
            })),
            auth: None,
        }
    }

    /// A queue of `commands`, each due in a minute; keeps the receivers so
    /// the writes' callers count as waiting.
    fn queue_of(
        commands: Vec<Command>,
    ) -> (
        Queue,
        Vec<oneshot::Receiver<Result<WriteResponse, ForwardError>>>,
    ) {
        let mut queue = Queue::default();
        let mut answers = Vec::new();
        for command in commands {
            let (reply, answer) = oneshot::channel();
            queue.waiting.push_back(Waiting {
                command,
                deadline: Instant::now() + Duration::from_secs(60),
                reply,
            });
            answers.push(answer);
        }
        (queue, answers)
    }

    #[test]
    fn a_batch_stops_at_its_count_and_size_and_a_big_write_goes_alone() {
        let (mut queue, _answers) = queue_of((0..BATCH_COMMANDS + 10).map(|_| put(8)).collect());
        assert_eq!(queue.take_batch().len(), BATCH_COMMANDS);
        assert_eq!(queue.take_batch().len(), 10);
        assert!(queue.take_batch().is_empty());

        let quarter = BATCH_BYTES / 4;
        let (mut queue, _answers) = queue_of(vec![
            put(quarter),
            put(quarter),
            put(quarter),
            put(quarter),
            put(2 * BATCH_BYTES),
            put(8),
        ]);
        assert_eq!(
            queue.take_batch().len(),
            3,
            "four quarters and their framing exceed the limit"
        );
        assert_eq!(queue.take_batch().len(), 1);
        assert_eq!(
            queue.take_batch().len(),
            1,
            "a write over the limit still goes, alone"
        );
        assert_eq!(queue.take_batch().len(), 1);
    }

    #[test]
    fn writes_whose_callers_gave_up_are_never_sent() {
        let (mut queue, mut answers) = queue_of((0..4).map(|_| put(8)).collect());
        queue.waiting[1].deadline = Instant::now();
        drop(answers.remove(2));
        let batch = queue.take_batch();
        assert_eq!(batch.len(), 2);
        assert!(queue.waiting.is_empty());
    }
}
