//! The simulated clients: they propose numbered commands to the leader (or
//! to a random node, which passes them on to the leader) and start
//! linearizable reads on random nodes, through the replica's own API, and
//! check what the nodes answer.
//!
//! A command stays pending until some node applies it. Like a real client,
//! it waits while the leader that accepted it leads, and re-sends only once
//! leadership has moved (the entry may then be lost). A proposal answered
//! with a response must get its own command's.

use std::sync::{Arc, Mutex};

use keel_node::replica::ReadView;
use keel_node::{ProposeError, ReadError};
use keel_raft::{Index, NodeId, Role};
use rand::Rng;

use crate::checker::{Property, Violation};
use crate::simulation::{Simulation, Step};
use crate::state_machine::StateMachine;

/// A client command waiting to be applied, with the leader and term that
/// last accepted it.
pub struct Pending {
    accepted_by: Option<(NodeId, u64)>,
}

/// What nodes answered clients, collected as the answers come (inside the
/// nodes' Ready handling) and checked after each step.
#[derive(Debug, Default)]
pub struct Answers {
    /// `(command, outcome)`.
    proposals: Vec<(u64, Result<u64, ProposeError>)>,
    /// `(read, outcome)`.
    reads: Vec<(u64, ReadOutcome)>,
}

/// A read's outcome: the read index and the applied index it saw, or why
/// it failed.
type ReadOutcome = Result<(Index, Index), ReadError>;

/// Where replies land: shared with the callbacks the replicas hold.
pub type SharedAnswers = Arc<Mutex<Answers>>;

fn lock(answers: &SharedAnswers) -> std::sync::MutexGuard<'_, Answers> {
    answers.lock().unwrap_or_else(|e| e.into_inner())
}

impl Simulation {
    /// A client asks for a new command.
    pub(crate) fn new_command(&mut self) {
        self.next_command += 1;
        self.report.commands += 1;
        self.pending
            .insert(self.next_command, Pending { accepted_by: None });
        self.propose(self.next_command);
    }

    /// Whether `node` still leads in `term`.
    fn leads(&self, node: NodeId, term: u64) -> bool {
        self.nodes
            .get(&node)
            .and_then(|n| n.raw())
            .is_some_and(|r| r.role() == Role::Leader && r.term() == term)
    }

    /// Re-sends (a bounded number of) commands whose leader moved on.
    pub(crate) fn retry_commands(&mut self) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.accepted_by
                    .is_none_or(|(node, term)| !self.leads(node, term))
            })
            .map(|(c, _)| *c)
            .take(32)
            .collect();
        for command in due {
            self.propose(command);
        }
    }

    fn propose(&mut self, command: u64) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let padding = self.rng.random_range(0..64);
        let data = postcard::to_allocvec(&(command, vec![0xABu8; padding]))
            .expect("a command always encodes");
        let answers = self.answers.clone();
        let reply = Box::new(move |outcome| lock(&answers).proposals.push((command, outcome)));
        // Now and then through a random node, which passes it on: it is
        // treated as accepted by the leader of the moment.
        let via = if self.rng.random_bool(0.3) {
            self.random_node_up().filter(|&id| id != leader)
        } else {
            None
        };
        if let Some(via) = via {
            let term = self.nodes[&leader].raw().map_or(0, |r| r.term());
            self.trace(format_args!("command {command} proposed on {via}"));
            let replica = self.nodes.get_mut(&via).and_then(|n| n.replica.as_mut());
            replica.expect("up").forward(data.into(), reply);
            if let Some(p) = self.pending.get_mut(&command) {
                p.accepted_by = Some((leader, term));
            }
            return;
        }
        let replica = self
            .nodes
            .get_mut(&leader)
            .and_then(|n| n.replica.as_mut())
            .expect("leader is up");
        match replica.propose(data.into(), reply) {
            Ok(id) => {
                self.trace(format_args!(
                    "command {command} proposed at {}/{} on {leader}",
                    id.index, id.term
                ));
                if let Some(p) = self.pending.get_mut(&command) {
                    p.accepted_by = Some((leader, id.term));
                }
            }
            // Refused for now (not leader, pipeline full, transfer under
            // way): the client retries at the next tick.
            Err(e) => self.trace(format_args!("command {command} refused by {leader}: {e}")),
        }
    }

    /// A client starts a read on a random live node.
    pub(crate) fn start_read(&mut self) {
        let Some(id) = self.random_node_up() else {
            return;
        };
        let request = self.reads.start(self.checker.max_applied());
        let answers = self.answers.clone();
        let read = Box::new(move |view: Result<ReadView<'_, StateMachine>, ReadError>| {
            let outcome = view.map(|v| (v.read_index, v.applied));
            lock(&answers).reads.push((request, outcome));
        });
        self.trace(format_args!("read {request} starts on {id}"));
        let replica = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut());
        replica.expect("live").read(read);
    }

    /// Checks what nodes answered since the last step: a proposal answered
    /// with a response got its own command's, and every read that returned
    /// is linearizable.
    pub(crate) fn check_answers(&mut self) -> Step {
        let Answers { proposals, reads } = std::mem::take(&mut *lock(&self.answers));
        for (command, outcome) in proposals {
            match outcome {
                Ok(applied) if applied != command => {
                    return Err(Violation {
                        property: Property::ClientResponse,
                        detail: format!(
                            "the proposal of command {command} was answered with command {applied}'s response"
                        ),
                    })
                }
                Ok(_) => self.trace(format_args!("command {command} answered")),
                // Refused, lost, indeterminate, stopped: the client sends
                // it again (an indeterminate one may then apply twice, as
                // with any client that retries).
                Err(e) => {
                    self.trace(format_args!("command {command} failed: {e}"));
                    if let Some(p) = self.pending.get_mut(&command) {
                        p.accepted_by = None;
                    }
                }
            }
        }
        for (request, outcome) in reads {
            match outcome {
                Ok((read_index, applied)) => {
                    self.reads.served(request, read_index, applied)?;
                    self.report.reads = self.reads.returned;
                }
                Err(e) => {
                    self.trace(format_args!("read {request} failed: {e}"));
                    self.reads.abandon(request);
                }
            }
        }
        Ok(())
    }
}
