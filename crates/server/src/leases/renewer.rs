//! Keep-alives, batched: every keep-alive waiting on this member goes into
//! one renewal entry, proposed as soon as the one before it is applied, and
//! each is answered once its renewal is. A keep-alive thus costs no entry
//! of its own however many arrive; the log sees at most one renewal in
//! flight per member. A renewal whose fate is unknown (its leader died) is
//! proposed again: applying one twice only renews twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_api::keelpb::{command::Op, Command as CommandPb, LeaseRenew};
use keel_mvcc::WriteResponse;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::core::{Core, ServerError};

/// The most leases one renewal entry names.
const MAX_BATCH: usize = 10_000;
/// Keep-alives that may wait for the next renewal.
const QUEUE: usize = 100_000;
/// How long to wait before proposing a failed renewal again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One keep-alive waiting: the lease and where its TTL goes.
type Waiting = (i64, oneshot::Sender<Result<i64, ServerError>>);

/// Hands keep-alives to the renewal task.
#[derive(Clone)]
pub(crate) struct Renewer {
    queue: mpsc::Sender<Waiting>,
}

/// The renewal task's end of the queue.
pub(crate) struct Renewals(mpsc::Receiver<Waiting>);

impl Renewer {
    /// A renewer and the queue its task reads.
    pub(crate) fn new() -> (Renewer, Renewals) {
        let (queue, waiting) = mpsc::channel(QUEUE);
        (Renewer { queue }, Renewals(waiting))
    }

    /// Renews lease `id`: its TTL once the renewal is applied, 0 if the
    /// lease does not exist.
    pub(crate) async fn renew(&self, id: i64) -> Result<i64, ServerError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((id, answer))
            .await
            .map_err(|_| ServerError::Stopped)?;
        answered.await.map_err(|_| ServerError::Stopped)?
    }
}

impl Renewals {
    /// Proposes renewals until `stop`.
    pub(crate) async fn run(mut self, core: Arc<Core>, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                first = self.0.recv() => match first {
                    Some(first) => first,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.0.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
            let command = CommandPb {
                op: Some(Op::LeaseRenew(LeaseRenew { ids })),
                auth: None,
            };
            // A renewal may be applied twice without harm: one whose fate
            // is unknown (the leader died with it in flight) is proposed
            // again, until the request timeout has passed twice.
            let deadline = Instant::now() + core.limits.request_timeout * 2;
            let outcome = loop {
                match core.write(command.clone()).await {
                    Err(e) if e != ServerError::Stopped && Instant::now() < deadline => {
                        tracing::debug!(error = %e, "a lease renewal failed; proposing it again");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(RETRY_PAUSE) => {}
                        }
                    }
                    outcome => break outcome,
                }
            };
            match outcome {
                Ok(WriteResponse::LeaseRenew(ttls)) if ttls.len() == batch.len() => {
                    for ((_, answer), ttl) in batch.into_iter().zip(ttls) {
                        let _ = answer.send(Ok(ttl));
                    }
                }
                Ok(_) => {
                    let error = ServerError::Internal("a renewal answered otherwise".into());
                    for (_, answer) in batch {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
                Err(e) => {
                    for (_, answer) in batch {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
