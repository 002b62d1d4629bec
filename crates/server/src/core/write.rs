//! The path of every write: checked, held to the space quota, proposed on
//! this member when it leads or passed on to the leader, and retried across
//! leader changes until the request timeout.

use std::time::Duration;

use keel_api::etcdserverpb::{alarm_request, AlarmRequest, AlarmType};
use keel_api::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{quota, validate, Command, MvccError, WriteResponse};
use tokio::time::Instant;

use super::{Core, ServerError};
use crate::metrics::{PROPOSALS_FAILED, PROPOSALS_PENDING};

/// How long to wait before trying a write again after a leader change.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

impl Core {
    /// Replicates a write and returns what applying it produced.
    pub(crate) async fn write(&self, command: CommandPb) -> Result<WriteResponse, ServerError> {
        validate::command(&command, self.limits.max_txn_ops)?;
        if quota::adds_data(&command) && self.store.db_size() > self.limits.quota_backend_bytes {
            self.raise_nospace().await;
            return Err(MvccError::NoSpace.into());
        }
        self.limits.disk.check()?;
        let deadline = Instant::now() + self.limits.request_timeout;
        loop {
            let attempt = match self.node.status().leader {
                Some(leader) if leader == self.identity.member_id => {
                    self.propose_here(command.clone(), deadline).await
                }
                Some(leader) => self
                    .forwarder
                    .propose(leader, command.clone(), deadline)
                    .await
                    .map_err(ServerError::from),
                None => Err(ServerError::NoLeader),
            };
            match attempt {
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) if e.is_retryable() => return Err(ServerError::Timeout),
                other => return other,
            }
        }
    }

    /// Proposes a write another member passed on; only the leader takes
    /// them (a member that does not lead says so, and the sender retries on
    /// the new leader). The command is checked again: a peer's command
    /// enters the log only if a client's would.
    pub(crate) async fn propose_forwarded(
        &self,
        command: CommandPb,
    ) -> Result<WriteResponse, ServerError> {
        if !self.is_leader() {
            return Err(ServerError::NotLeader);
        }
        validate::command(&command, self.limits.max_txn_ops)?;
        self.limits.disk.check()?;
        let deadline = Instant::now() + self.limits.request_timeout;
        self.propose_here(command, deadline).await
    }

    /// Proposes on this member, which must be the leader.
    async fn propose_here(
        &self,
        command: CommandPb,
        deadline: Instant,
    ) -> Result<WriteResponse, ServerError> {
        let pending = metrics::gauge!(PROPOSALS_PENDING);
        pending.increment(1);
        let outcome = tokio::time::timeout_at(deadline, self.node.propose(Command(command))).await;
        pending.decrement(1);
        match outcome {
            Ok(Ok(Ok(response))) => Ok(response),
            // Applied, and refused by the store: the proposal itself worked.
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(e)) => {
                metrics::counter!(PROPOSALS_FAILED).increment(1);
                Err(e.into())
            }
            Err(_) => {
                metrics::counter!(PROPOSALS_FAILED).increment(1);
                Err(ServerError::Timeout)
            }
        }
    }

    /// Records a NOSPACE alarm for this member (best effort: the write that
    /// noticed is refused either way).
    async fn raise_nospace(&self) {
        let already = self.store.alarms().iter().any(|a| {
            a.member_id == self.identity.member_id && a.alarm == AlarmType::Nospace as i32
        });
        if already {
            return;
        }
        let alarm = CommandPb {
            op: Some(Op::Alarm(AlarmRequest {
                action: alarm_request::AlarmAction::Activate as i32,
                member_id: self.identity.member_id,
                alarm: AlarmType::Nospace as i32,
            })),
            auth: None,
        };
        if let Err(e) = Box::pin(self.write(alarm)).await {
            tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
        }
    }
}
