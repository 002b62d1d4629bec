//! Passing requests on to the leader: a client's write (keel's `Forward`
//! service) and membership changes (etcd's `Cluster` service, marked as
//! forwarded so the leader never passes them on again), over one cached
//! channel per peer.

use std::error::Error as _;
use std::time::Duration;

use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use keel_api::keelpb::Command;
use keel_mvcc::{MvccError, WriteResponse};
use keel_node::NodeId;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::batches::Batches;
use super::Peers;
use crate::api::grpc::status::{LEADER_CHANGED, NOT_LEADER, NO_LEADER};
use crate::tls::Channels;

/// The gRPC metadata key that marks a membership request a member passed
/// on to the leader.
pub(crate) const FORWARDED_KEY: &str = "keel-forwarded";

/// Why the leader did not answer a forwarded request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The request never reached a leader, or the leader said it did not
    /// propose it: trying again cannot apply it twice.
    #[error("the leader could not be reached")]
    Unreachable,
    /// The request was sent and no answer came back (the connection broke
    /// mid-call): it may or may not have been applied.
    #[error("no answer from the leader: {0}")]
    Unanswered(String),
    /// The leader answered with a failure (a gRPC status, kept verbatim).
    #[error("the leader refused: {message}")]
    Refused {
        /// The status code.
        code: i32,
        /// The leader's message.
        message: String,
    },
    /// The leader's answer made no sense.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The leader's recorded peer address is not usable.
    #[error("{0}")]
    BadAddress(String),
}

impl From<Status> for ForwardError {
    fn from(status: Status) -> Self {
        if never_sent(&status) || not_proposed(&status) {
            ForwardError::Unreachable
        } else if status.source().is_some() {
            // A failure of this side's call, not an answer of the leader's.
            ForwardError::Unanswered(status.message().to_string())
        } else {
            ForwardError::Refused {
                code: status.code() as i32,
                message: status.message().to_string(),
            }
        }
    }
}

/// Whether the call failed while connecting, before anything was sent.
fn never_sent(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether the leader answered that it did not propose the request (it
/// does not lead, or the entry was replaced before it could commit).
fn not_proposed(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status.source().is_none()
        && [NOT_LEADER, NO_LEADER, LEADER_CHANGED].contains(&status.message())
}

/// Channels to the peers, made on first use, and the writes queued for
/// the leader.
pub(crate) struct Forwarder {
    peers: Peers,
    channels: Channels,
    batches: Batches,
}

impl Forwarder {
    /// A forwarder reaching peers at the addresses `peers` knows.
    pub(crate) fn new(peers: Peers) -> Self {
        Forwarder {
            channels: Channels::new(peers.dialer().clone(), |endpoint| {
                endpoint.connect_timeout(Duration::from_secs(1))
            }),
            peers,
            batches: Batches::default(),
        }
    }

    /// Has `leader` propose `command` (with the next batch of writes for
    /// it), waiting until `deadline`.
    pub(crate) async fn propose(
        &self,
        leader: NodeId,
        command: Command,
        deadline: Instant,
    ) -> Result<WriteResponse, ForwardError> {
        let channel = self.channel(leader)?;
        self.batches
            .propose(leader, channel, command, deadline)
            .await
    }

    /// Has `leader` add a member.
    pub(crate) async fn member_add(
        &self,
        leader: NodeId,
        request: MemberAddRequest,
    ) -> Result<MemberAddResponse, ForwardError> {
        verbatim(self.cluster(leader)?.member_add(forwarded(request)).await)
    }

    /// Has `leader` remove a member.
    pub(crate) async fn member_remove(
        &self,
        leader: NodeId,
        request: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, ForwardError> {
        verbatim(
            self.cluster(leader)?
                .member_remove(forwarded(request))
                .await,
        )
    }

    /// Has `leader` update a member's peer URLs.
    pub(crate) async fn member_update(
        &self,
        leader: NodeId,
        request: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, ForwardError> {
        verbatim(
            self.cluster(leader)?
                .member_update(forwarded(request))
                .await,
        )
    }

    /// Has `leader` promote a learner.
    pub(crate) async fn member_promote(
        &self,
        leader: NodeId,
        request: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, ForwardError> {
        verbatim(
            self.cluster(leader)?
                .member_promote(forwarded(request))
                .await,
        )
    }

    /// Asks member `id`'s peer port something small (its member list,
    /// answered locally) within `patience`: whether it answered.
    pub(crate) async fn probe(&self, id: NodeId, patience: Duration) -> bool {
        let Ok(mut cluster) = self.cluster(id) else {
            return false;
        };
        let mut request = Request::new(MemberListRequest {
            linearizable: false,
        });
        request.set_timeout(patience);
        cluster.member_list(request).await.is_ok()
    }

    /// A client of `leader`'s Cluster service.
    fn cluster(&self, leader: NodeId) -> Result<ClusterClient<Channel>, ForwardError> {
        Ok(ClusterClient::new(self.channel(leader)?))
    }

    /// A channel to member `id`'s peer port.
    fn channel(&self, id: NodeId) -> Result<Channel, ForwardError> {
        let address = self.peers.address(id).ok_or(ForwardError::Unreachable)?;
        self.channels
            .get(&address)
            .map_err(|e| ForwardError::BadAddress(format!("peer address {address}: {e}")))
    }
}

/// The leader's answer to a membership change, its failure kept as it is
/// whatever the code (membership changes are not retried, so the client
/// sees the leader's own answer).
fn verbatim<T>(answer: Result<tonic::Response<T>, Status>) -> Result<T, ForwardError> {
    answer
        .map(tonic::Response::into_inner)
        .map_err(|status| ForwardError::Refused {
            code: status.code() as i32,
            message: status.message().to_string(),
        })
}

/// `request` marked as forwarded, for the leader.
fn forwarded<T>(request: T) -> Request<T> {
    let mut request = Request::new(request);
    request.metadata_mut().insert(
        FORWARDED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_that_was_never_proposed_is_sent_again() {
        // The leader's own answers that it did not propose: retried.
        for message in [NOT_LEADER, NO_LEADER, LEADER_CHANGED] {
            let status = Status::unavailable(message);
            assert_eq!(ForwardError::from(status), ForwardError::Unreachable);
        }
        // Failing to connect: nothing was sent.
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(ForwardError::from(status), ForwardError::Unreachable);

        // The leader timed out or cannot tell: its answer, kept, not retried.
        let status = Status::unavailable("etcdserver: request timed out");
        assert!(matches!(
            ForwardError::from(status),
            ForwardError::Refused { code, .. } if code == Code::Unavailable as i32
        ));
        // The connection broke after the request went out: unknown.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let status = Status::from_error(Box::new(reset));
        assert!(matches!(
            ForwardError::from(status),
            ForwardError::Unanswered(_)
        ));
    }
}
