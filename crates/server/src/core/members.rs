//! Membership. Who is a member (and who a learner) is the raft
//! configuration; names and URLs are replicated member records. Changes run
//! on the leader; other members pass them on to it.
//!
//! A member added as a voter joins as a learner first (keel-raft refuses
//! voters that have not caught up) and is promoted by the leader once it
//! has: its record says it wants to vote, and [`Core::promote_caught_up`]
//! acts on that on whichever member leads.

use std::collections::BTreeSet;

use keel_api::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use keel_api::keelpb::{command::Op, Command as CommandPb};
use keel_node::{ConfState, NodeId, ProposeError, RefusedProposal};

use super::{Core, ServerError};
use crate::config::host_port;
use crate::identity::stable_id;

/// Where a membership change runs.
enum Route {
    /// Here: this member leads.
    Here,
    /// On the leader, this one.
    Leader(NodeId),
}

impl Core {
    /// The members as etcd lists them: every voter and learner of the raft
    /// configuration, with its recorded name and URLs.
    pub(crate) fn members(&self) -> Vec<Member> {
        let conf = self.node.status().conf_state;
        let learners: BTreeSet<NodeId> = conf.learners.iter().copied().collect();
        let ids: BTreeSet<NodeId> = conf
            .voters
            .iter()
            .chain(&conf.voters_outgoing)
            .chain(&conf.learners)
            .chain(&conf.learners_next)
            .copied()
            .collect();
        let records = self.store.members();
        ids.into_iter()
            .map(|id| {
                let mut member =
                    records
                        .iter()
                        .find(|m| m.id == id)
                        .cloned()
                        .unwrap_or_else(|| Member {
                            id,
                            peer_ur_ls: self
                                .peers
                                .address(id)
                                .map(|a| vec![format!("http://{a}")])
                                .unwrap_or_default(),
                            ..Member::default()
                        });
                member.is_learner = learners.contains(&id);
                member
            })
            .collect()
    }

    /// The member list, after a ReadIndex when `linearizable`.
    pub(crate) async fn member_list(
        &self,
        linearizable: bool,
    ) -> Result<MemberListResponse, ServerError> {
        if linearizable {
            self.linearizable().await?;
        }
        Ok(MemberListResponse {
            header: Some(self.header()),
            members: self.members(),
        })
    }

    /// Adds a member (as a learner first; see the module).
    /// `forwarded` says another member passed the request on.
    pub(crate) async fn member_add(
        &self,
        request: MemberAddRequest,
        forwarded_here: bool,
    ) -> Result<MemberAddResponse, ServerError> {
        if let Route::Leader(leader) = self.route(forwarded_here).await? {
            return Ok(self.forwarder.member_add(leader, request).await?);
        }
        if request.peer_ur_ls.is_empty() {
            return Err(ServerError::InvalidArgument("no peer URLs given".into()));
        }
        check_urls(&request.peer_ur_ls)?;
        let members = self.members();
        if members
            .iter()
            .any(|m| m.peer_ur_ls.iter().any(|u| request.peer_ur_ls.contains(u)))
        {
            return Err(ServerError::PeerUrlExists);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_le_bytes();
        let id = stable_id(
            request
                .peer_ur_ls
                .iter()
                .map(|u| u.as_bytes())
                .chain([&now[..]]),
        );
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: request.peer_ur_ls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: request.is_learner,
        };
        self.set_member(member.clone()).await?;
        // check_urls accepted them: the first has a host and port.
        let address = host_port(&member.peer_ur_ls[0])
            .map_err(|e| ServerError::InvalidArgument(e.to_string()))?;
        self.conf_change(self.node.add_learner(id, address)).await?;
        tracing::info!(member = %format!("{id:x}"), urls = ?member.peer_ur_ls, learner = request.is_learner, "member added");
        Ok(MemberAddResponse {
            header: Some(self.header()),
            member: Some(member),
            members: self.members(),
        })
    }

    /// Removes a member.
    pub(crate) async fn member_remove(
        &self,
        request: MemberRemoveRequest,
        forwarded_here: bool,
    ) -> Result<MemberRemoveResponse, ServerError> {
        if let Route::Leader(leader) = self.route(forwarded_here).await? {
            return Ok(self.forwarder.member_remove(leader, request).await?);
        }
        let id = request.id;
        if !self.members().iter().any(|m| m.id == id) {
            return Err(ServerError::MemberNotFound);
        }
        self.conf_change(self.node.remove(id)).await?;
        self.write(CommandPb {
            op: Some(Op::RemoveMember(id)),
            auth: None,
        })
        .await?;
        tracing::info!(member = %format!("{id:x}"), "member removed");
        Ok(MemberRemoveResponse {
            header: Some(self.header()),
            members: self.members(),
        })
    }

    /// Changes a member's peer URLs.
    pub(crate) async fn member_update(
        &self,
        request: MemberUpdateRequest,
        forwarded_here: bool,
    ) -> Result<MemberUpdateResponse, ServerError> {
        if let Route::Leader(leader) = self.route(forwarded_here).await? {
            return Ok(self.forwarder.member_update(leader, request).await?);
        }
        check_urls(&request.peer_ur_ls)?;
        let Some(mut member) = self.members().into_iter().find(|m| m.id == request.id) else {
            return Err(ServerError::MemberNotFound);
        };
        member.peer_ur_ls = request.peer_ur_ls;
        // The record's learner flag means "wants to stay a learner".
        member.is_learner = self
            .store
            .members()
            .iter()
            .find(|m| m.id == request.id)
            .is_some_and(|m| m.is_learner);
        self.set_member(member).await?;
        Ok(MemberUpdateResponse {
            header: Some(self.header()),
            members: self.members(),
        })
    }

    /// Promotes a learner to voter (refused until it has caught up).
    pub(crate) async fn member_promote(
        &self,
        request: MemberPromoteRequest,
        forwarded_here: bool,
    ) -> Result<MemberPromoteResponse, ServerError> {
        if let Route::Leader(leader) = self.route(forwarded_here).await? {
            return Ok(self.forwarder.member_promote(leader, request).await?);
        }
        let id = request.id;
        let Some(member) = self.members().into_iter().find(|m| m.id == id) else {
            return Err(ServerError::MemberNotFound);
        };
        if !member.is_learner {
            return Err(ServerError::MemberNotLearner);
        }
        self.conf_change(self.node.promote(id)).await?;
        let mut record = member;
        record.is_learner = false;
        self.set_member(record).await?;
        Ok(MemberPromoteResponse {
            header: Some(self.header()),
            members: self.members(),
        })
    }

    /// On the leader: promotes each learner whose record asks to vote, once
    /// it has caught up.
    pub(crate) async fn promote_caught_up(&self) {
        let status = self.node.status();
        for record in self.store.members() {
            if record.is_learner || !status.conf_state.learners.contains(&record.id) {
                continue;
            }
            match self.node.promote(record.id).await {
                Ok(_) => {
                    tracing::info!(member = %format!("{:x}", record.id), "learner promoted to voter")
                }
                Err(ProposeError::Refused(RefusedProposal::NotCaughtUp { .. })) => {}
                Err(e) => tracing::debug!(error = %e, "promotion deferred"),
            }
        }
    }

    /// Where a membership change runs: here on the leader, or on the leader
    /// through a client (never for a request already passed on once).
    async fn route(&self, forwarded_here: bool) -> Result<Route, ServerError> {
        let leader = self.leader().await?;
        if leader == self.identity.member_id {
            return Ok(Route::Here);
        }
        if forwarded_here {
            return Err(ServerError::NotLeader);
        }
        Ok(Route::Leader(leader))
    }

    async fn conf_change(
        &self,
        change: impl std::future::Future<Output = Result<ConfState, ProposeError>>,
    ) -> Result<(), ServerError> {
        match tokio::time::timeout(self.limits.request_timeout, change).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Records (or replaces) a member's name and URLs.
    pub(crate) async fn set_member(&self, member: Member) -> Result<(), ServerError> {
        let command = CommandPb {
            op: Some(Op::SetMember(member)),
            auth: None,
        };
        self.write(command).await.map(|_| ())
    }
}

fn check_urls(urls: &[String]) -> Result<(), ServerError> {
    for url in urls {
        host_port(url).map_err(|e| ServerError::InvalidArgument(e.to_string()))?;
    }
    Ok(())
}
