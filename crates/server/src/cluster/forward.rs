//! Passing requests on to the leader: a client's write (keel's `Forward`
//! service) and membership changes (etcd's `Cluster` service, marked as
//! forwarded so the leader never passes them on again), over one cached
//! channel per peer.

use std::time::Duration;

use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use keel_api::keelpb::forward_client::ForwardClient;
use keel_api::keelpb::Command;
use keel_mvcc::{MvccError, WriteResponse};
use keel_node::NodeId;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::Peers;
use crate::tls::Channels;

/// The gRPC metadata key that marks a membership request a member passed
/// on to the leader.
pub(crate) const FORWARDED_KEY: &str = "keel-forwarded";

/// Why the leader did not answer a forwarded request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The leader could not be reached, or no longer leads: try again.
    #[error("the leader could not be reached")]
    Unreachable,
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
        match status.code() {
            // The leader is unreachable or just lost office.
            Code::Unavailable => ForwardError::Unreachable,
            code => ForwardError::Refused {
                code: code as i32,
                message: status.message().to_string(),
            },
        }
    }
}

/// Channels to the peers, made on first use.
pub(crate) struct Forwarder {
    peers: Peers,
    channels: Channels,
}

impl Forwarder {
    /// A forwarder reaching peers at the addresses `peers` knows.
    pub(crate) fn new(peers: Peers) -> Self {
        Forwarder {
            channels: Channels::new(peers.dialer().clone(), |endpoint| {
                endpoint.connect_timeout(Duration::from_secs(1))
            }),
            peers,
        }
    }

    /// Has `leader` propose `command`, waiting until `deadline`.
    pub(crate) async fn propose(
        &self,
        leader: NodeId,
        command: Command,
        deadline: Instant,
    ) -> Result<WriteResponse, ForwardError> {
        let mut request = Request::new(command);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let outcome = ForwardClient::new(self.channel(leader)?)
            .propose(request)
            .await?
            .into_inner();
        Ok(WriteResponse::from_outcome(outcome)?)
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
