//! [`Replica`]: the synchronous heart of a node, with no runtime in it.
//!
//! A replica owns the Raft core, the durable log ([`LogStore`]), the
//! application's [`StateMachine`], the [`Transport`] its messages leave
//! through, and everything waiting on them: proposals until their entry is
//! applied, reads until they are confirmed and applied. It handles each
//! [`Ready`] in the order the core's contract sets:
//!
//! 1. the leader's appends and heartbeats leave at once, so the network
//!    overlaps the disk;
//! 2. chunks of a snapshot being received are written, and a completely
//!    received snapshot is installed (the state machine restores from it);
//! 3. entries and hard state become durable;
//! 4. messages that promise durable state (votes, acknowledgements) leave;
//! 5. committed commands are applied as one batch and their proposals are
//!    answered; proposals whose entries were replaced are answered `Lost`,
//!    those a snapshot skipped `Indeterminate`;
//! 6. confirmed reads run once the applied index reaches theirs.
//!
//! Time is the tick: read deadlines are counted in ticks, so the replica
//! needs no clock. keel-node's async driver feeds it from tokio (a timer,
//! channels, the WAL); keel-sim feeds it from virtual time (a simulated
//! network, an in-memory disk that loses unsynced data in a crash), so the
//! simulator checks this very code against thousands of seeds.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;
use keel_raft::{
    ConfChange, ConfChangeOp, ConfState, Entry, EntryId, EntryKind, HardState, Index, MemStorage,
    Message, NodeId, RawNode, ReadIndexError, Ready, SnapshotChunk, SnapshotMeta, StepError,
};

use crate::addresses;
pub use crate::addresses::AddressBook;
use crate::error::{ProposeError, ReadError, TransferError};
use crate::state_machine::StateMachine;
use crate::transport::Transport;

/// The durable side of a replica's log. The core reads the log through
/// the `MemStorage` its `RawNode` was built over; a log store makes writes
/// durable and keeps that copy in step.
pub trait LogStore {
    /// Why a write failed. Any failure stops the replica.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes `entries` (replacing any stored suffix they conflict with) and
    /// `hard_state` durable, in one sync.
    fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), Self::Error>;

    /// Records the membership as of the applied index.
    fn set_conf_state(&mut self, conf_state: ConfState);

    /// Writes a chunk of a snapshot being received; a chunk at offset 0
    /// starts a new snapshot, the others follow in order.
    fn receive_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), Self::Error>;

    /// Completes the snapshot received for `meta`, has `restore` read it
    /// into the state machine, and restarts the log after it.
    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        restore: Restore<'_>,
    ) -> Result<(), Self::Error>;
}

/// Reads a received snapshot into the state machine (the error says why not).
pub type Restore<'a> = &'a mut dyn FnMut(&mut dyn Read) -> Result<(), String>;

/// Where a proposal's outcome goes: called exactly once.
pub type Reply<T> = Box<dyn FnOnce(Result<T, ProposeError>) + Send>;

/// A linearizable read: called once with the state machine (applied at
/// least up to the read index), or with why the read failed.
pub type ReadFn<S> = Box<dyn FnOnce(Result<ReadView<'_, S>, ReadError>) + Send>;

/// What a confirmed read sees.
pub struct ReadView<'a, S> {
    /// The state machine.
    pub state: &'a S,
    /// The read index the leader confirmed.
    pub read_index: Index,
    /// The index the state machine has applied (at least `read_index`).
    pub applied: Index,
}

/// Why a replica stopped on its own: going on could corrupt or lose state.
#[derive(Debug, thiserror::Error)]
pub enum Fatal<E: std::error::Error + 'static> {
    /// Durable state could not be written.
    #[error("cannot persist: {0}")]
    Store(#[source] E),
    /// A committed entry is not a command of this state machine: every
    /// replica would fail on it the same way, so applying must not go on.
    #[error("committed entry {index} does not decode as a command: {reason}")]
    Undecodable {
        /// The entry's index.
        index: Index,
        /// The decoder's complaint.
        reason: String,
    },
    /// The state machine's `apply_batch` broke its contract.
    #[error(
        "apply_batch returned {responses} responses for {commands} commands \
         (entries {first} to {last})"
    )]
    ResponseCount {
        /// The first entry of the batch.
        first: Index,
        /// The last entry of the batch.
        last: Index,
        /// Commands handed to the state machine.
        commands: usize,
        /// Responses it returned.
        responses: usize,
    },
}

/// What handling one Ready did that its caller may care about.
#[derive(Debug, Default)]
pub struct Handled {
    /// The snapshot installed, if any (before `applied`).
    pub installed: Option<SnapshotMeta>,
    /// The committed entries applied, in log order.
    pub applied: Vec<Entry>,
}

/// How a replica serves its clients.
#[derive(Clone, Debug, Default)]
pub struct ReplicaOptions {
    /// Every member's address as known at start (the initial members, or
    /// what the latest snapshot recorded). The replica keeps it up to date
    /// from the membership changes it applies and the snapshots it
    /// installs, and tells its transport.
    pub addresses: AddressBook,
    /// Ticks a read may wait for its confirmation before it fails with
    /// [`ReadError::Timeout`].
    pub read_timeout_ticks: u64,
    /// Ticks after which a follower's read still unconfirmed asks the
    /// leader again, as often as that until it times out: the request or
    /// the answer may have been lost (0: never). Either answer confirms
    /// it, and a second answer finds no one waiting.
    pub read_retry_ticks: u64,
    /// The id of this life's first read request. Ids must not repeat
    /// across restarts: a leader's confirmation of a read sent by an
    /// earlier life may still be on its way, and must not confirm a new
    /// read with its older index.
    pub first_read_id: u64,
}

/// A proposal waiting for its entry to be applied.
struct Waiter<T> {
    term: u64,
    reply: Reply<T>,
    /// Appended to this replica's log when proposed (not a forwarded
    /// proposal whose entry the leader named).
    in_own_log: bool,
}

/// A proposal sent to the leader, waiting to hear which entry it became.
struct Forwarded<T> {
    /// The tick after which it is given up (`Indeterminate`).
    deadline: u64,
    /// The applied index when it was sent: its entry comes after it.
    applied_then: Index,
    reply: Reply<T>,
}

/// A read waiting for the leader to confirm its index.
struct WaitingRead<S: StateMachine> {
    /// The tick after which it fails (`Timeout`).
    deadline: u64,
    /// The tick at which a follower asks the leader again.
    ask_again: u64,
    read: ReadFn<S>,
}

/// The most responses kept for forwarded proposals whose answer from the
/// leader is late (their entry was applied before the answer came).
const MAX_RECENT_RESPONSES: usize = 16_384;

/// The core, the log store, the state machine and the waiters of one node.
pub struct Replica<S: StateMachine, L, T> {
    raw: RawNode<MemStorage>,
    store: L,
    sm: S,
    transport: T,
    options: ReplicaOptions,
    proposals: BTreeMap<Index, Waiter<S::Response>>,
    changes: BTreeMap<Index, Waiter<ConfState>>,
    /// Reads sent for confirmation, by request id.
    reads_waiting_index: BTreeMap<u64, WaitingRead<S>>,
    /// Confirmed reads waiting for the applied index to reach theirs.
    reads_waiting_apply: Vec<(Index, ReadFn<S>)>,
    /// Proposals sent to the leader: request id → waiter.
    forwarded: BTreeMap<u64, Forwarded<S::Response>>,
    /// While proposals wait for the leader's answer: responses of entries
    /// applied meanwhile that no one waited for, oldest first (one may be
    /// a forwarded proposal's whose answer is still on its way).
    recent: std::collections::VecDeque<(EntryId, S::Response)>,
    /// The next id for a read or a forwarded proposal.
    next_request: u64,
    ticks: u64,
    /// The last index applied to the state machine.
    applied: Index,
}

impl<S: StateMachine, L: LogStore, T: Transport> Replica<S, L, T> {
    /// A replica over a core built on the store's log, with a state machine
    /// that holds the state as of `raw`'s applied index.
    pub fn new(
        raw: RawNode<MemStorage>,
        store: L,
        sm: S,
        transport: T,
        options: ReplicaOptions,
    ) -> Self {
        let applied = raw.status().applied;
        for (id, address) in options.addresses.all() {
            transport.learn_address(id, &address);
        }
        Replica {
            raw,
            store,
            sm,
            transport,
            next_request: options.first_read_id,
            options,
            proposals: BTreeMap::new(),
            changes: BTreeMap::new(),
            reads_waiting_index: BTreeMap::new(),
            reads_waiting_apply: Vec::new(),
            forwarded: BTreeMap::new(),
            recent: std::collections::VecDeque::new(),
            ticks: 0,
            applied,
        }
    }

    /// The Raft core.
    pub fn raw(&self) -> &RawNode<MemStorage> {
        &self.raw
    }

    /// The state machine.
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The state machine, for callers that keep bookkeeping in it (the
    /// simulator's observers). Changing replicated state here breaks it.
    pub fn state_machine_mut(&mut self) -> &mut S {
        &mut self.sm
    }

    /// The log store.
    pub fn store(&self) -> &L {
        &self.store
    }

    /// The log store, for work outside the Ready loop (compaction).
    pub fn store_mut(&mut self) -> &mut L {
        &mut self.store
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The last index applied to the state machine.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// One tick: the core's timers advance, and reads waiting too long for
    /// their confirmation fail.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        let now = self.ticks;
        let mut expired = Vec::new();
        let mut ask_again = Vec::new();
        // A leader confirms its own reads with its heartbeat rounds.
        let retry = match self.raw.role() {
            keel_raft::Role::Leader => 0,
            _ => self.options.read_retry_ticks,
        };
        for (id, waiting) in &mut self.reads_waiting_index {
            if waiting.deadline <= now {
                expired.push(*id);
            } else if retry > 0 && waiting.ask_again <= now {
                waiting.ask_again = now + retry;
                ask_again.push(*id);
            }
        }
        for id in expired {
            if let Some(waiting) = self.reads_waiting_index.remove(&id) {
                (waiting.read)(Err(ReadError::Timeout));
            }
        }
        for id in ask_again {
            // Without a leader now, the read waits for one or times out.
            let _ = self.raw.read_index(id);
        }
        // No answer from the leader: the proposal or its answer was lost.
        let expired: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = self.forwarded.remove(&id) {
                (f.reply)(Err(ProposeError::Indeterminate));
            }
        }
        if self.forwarded.is_empty() {
            self.recent.clear();
        }
    }

    /// Hands a peer's message to the core (which refuses bad input).
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        self.raw.step(message)
    }

    /// Proposes an encoded command; `reply` gets the state machine's
    /// response once it is applied here. Returns the entry the proposal
    /// got, or the refusal (which `reply` has also been given). A command
    /// that encodes to no bytes is refused: empty entries are the leaders'
    /// no-ops, never applied.
    pub fn propose(
        &mut self,
        data: Bytes,
        reply: Reply<S::Response>,
    ) -> Result<EntryId, ProposeError> {
        let reply = refuse_empty(&data, reply)?;
        let proposed = self.raw.propose(data);
        self.wait_for(proposed, reply, |r| &mut r.proposals)
    }

    /// Proposes an encoded command on any member: a follower sends it to
    /// the leader, learns which entry it became, and answers `reply` with
    /// its own state machine's response once it applies that entry. A
    /// proposal the leader does not answer within the read timeout is
    /// `Indeterminate` (it may have been appended).
    pub fn forward(&mut self, data: Bytes, reply: Reply<S::Response>) {
        let Ok(reply) = refuse_empty(&data, reply) else {
            return;
        };
        if self.raw.role() == keel_raft::Role::Leader {
            let _ = self.propose(data, reply);
            return;
        }
        let request = self.next_request();
        match self.raw.forward_proposal(request, data) {
            Ok(()) => {
                let waiting = Forwarded {
                    deadline: self.ticks + self.options.read_timeout_ticks,
                    applied_then: self.applied,
                    reply,
                };
                self.forwarded.insert(request, waiting);
            }
            Err(e) => reply(Err(self.refusal(e))),
        }
    }

    /// The leader said where a forwarded proposal went: wait for that
    /// entry, or answer at once if it was refused or is applied already.
    fn forward_answered(&mut self, request: u64, result: Result<EntryId, keel_raft::ProposeError>) {
        let Some(waiting) = self.forwarded.remove(&request) else {
            return; // Given up on already, or an earlier life's request.
        };
        let id = match result {
            Ok(id) => id,
            Err(e) => return (waiting.reply)(Err(self.refusal(e))),
        };
        if id.index > self.applied {
            let waiter = Waiter {
                term: id.term,
                reply: waiting.reply,
                in_own_log: false,
            };
            // A waiter of an earlier term at this index lost its entry.
            if let Some(replaced) = self.proposals.insert(id.index, waiter) {
                (replaced.reply)(Err(ProposeError::Lost));
            }
            return;
        }
        // Applied before the answer came: the response was kept, unless a
        // snapshot skipped the entry or too many came after it.
        let kept = self.recent.iter().position(|(e, _)| e.index == id.index);
        let result = match kept.and_then(|at| self.recent.remove(at)) {
            Some((entry, response)) if entry.term == id.term => Ok(response),
            Some(_) => Err(ProposeError::Lost),
            None => Err(ProposeError::Indeterminate),
        };
        if self.forwarded.is_empty() {
            self.recent.clear();
        }
        (waiting.reply)(result);
    }

    fn next_request(&mut self) -> u64 {
        let request = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        request
    }

    /// Proposes a membership change, with the addresses of members it
    /// adds (recorded in the entry, so every member learns them); `reply`
    /// gets the membership once it is applied here. Returns as
    /// [`propose`](Self::propose) does.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        addresses: &BTreeMap<NodeId, String>,
        reply: Reply<ConfState>,
    ) -> Result<EntryId, ProposeError> {
        let context = if addresses.is_empty() {
            Vec::new()
        } else {
            addresses::encode(addresses)
        };
        let proposed = self.raw.propose_conf_change_with_context(change, &context);
        self.wait_for(proposed, reply, |r| &mut r.changes)
    }

    /// Starts a linearizable read: `read` runs once the leader confirmed a
    /// read index and this replica applied up to it.
    pub fn read(&mut self, read: ReadFn<S>) {
        let request = self.next_request();
        match self.raw.read_index(request) {
            Ok(()) => {
                let waiting = WaitingRead {
                    deadline: self.ticks + self.options.read_timeout_ticks,
                    ask_again: self.ticks + self.options.read_retry_ticks,
                    read,
                };
                self.reads_waiting_index.insert(request, waiting);
            }
            Err(ReadIndexError::NoLeader) => read(Err(ReadError::NoLeader)),
        }
    }

    /// Hands leadership to voter `to`.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.raw.transfer_leader(to).map_err(TransferError::from)
    }

    /// Files `reply` under the entry a proposal got, or answers at once if
    /// the core refused it.
    fn wait_for<R>(
        &mut self,
        proposed: Result<EntryId, keel_raft::ProposeError>,
        reply: Reply<R>,
        waiters: fn(&mut Self) -> &mut BTreeMap<Index, Waiter<R>>,
    ) -> Result<EntryId, ProposeError> {
        match proposed {
            Ok(id) => {
                let waiter = Waiter {
                    term: id.term,
                    reply,
                    in_own_log: true,
                };
                waiters(self).insert(id.index, waiter);
                Ok(id)
            }
            Err(e) => {
                let refusal = self.refusal(e);
                reply(Err(refusal.clone()));
                Err(refusal)
            }
        }
    }

    fn refusal(&self, e: keel_raft::ProposeError) -> ProposeError {
        match e {
            keel_raft::ProposeError::NotLeader { leader } => ProposeError::NotLeader {
                leader,
                address: leader.and_then(|l| self.options.addresses.get(l)),
            },
            other => ProposeError::Refused(other),
        }
    }

    /// The next batch of work, if the core has any.
    pub fn ready(&mut self) -> Option<Ready> {
        self.raw.has_ready().then(|| self.raw.ready())
    }

    /// Does the work of `ready` in the order of the core's contract, then
    /// tells the core it is done. An error stops the replica: the caller
    /// must not hand it more work.
    pub fn handle_ready(&mut self, ready: Ready) -> Result<Handled, Fatal<L::Error>> {
        // The leader's appends go out first, so the network overlaps the sync.
        self.send(ready.messages);
        for chunk in ready.snapshot_chunks {
            self.store.receive_chunk(chunk).map_err(Fatal::Store)?;
        }
        let installed = ready.snapshot.clone();
        if let Some(meta) = ready.snapshot {
            let index = meta.last.index;
            let sm = &mut self.sm;
            let mut book = None;
            self.store
                .install_snapshot(meta, &mut |data| {
                    book = Some(addresses::read_from_snapshot(data)?);
                    sm.restore(data)
                })
                .map_err(Fatal::Store)?;
            for (id, address) in book.unwrap_or_default() {
                self.learn_address(id, address);
            }
            self.applied = index;
            self.settle_before(index + 1, ProposeError::Indeterminate);
            self.recent.clear();
        }
        self.store
            .persist(&ready.entries, ready.hard_state)
            .map_err(Fatal::Store)?;
        if let Some(last) = ready.entries.last() {
            self.settle_cut_off(last.index);
        }
        self.send(ready.persisted_messages);
        // Before applying: one of these entries may be a forwarded one's.
        for answer in ready.forwarded {
            self.forward_answered(answer.request, answer.result);
        }
        self.apply_entries(&ready.committed_entries)?;
        if let Some(cs) = ready.conf_state {
            self.store.set_conf_state(cs);
        }
        for rs in ready.read_states {
            if let Some(waiting) = self.reads_waiting_index.remove(&rs.request) {
                self.reads_waiting_apply.push((rs.index, waiting.read));
            }
        }
        self.run_reads();
        self.raw.advance();
        Ok(Handled {
            installed,
            applied: ready.committed_entries,
        })
    }

    /// Stops: every proposal and change still waiting is answered
    /// `Indeterminate` (its entry is in the log and may yet commit on the
    /// other members), every read `Stopped`. Returns the state machine.
    pub fn stop(mut self) -> S {
        self.settle_before(Index::MAX, ProposeError::Indeterminate);
        for (_, f) in std::mem::take(&mut self.forwarded) {
            (f.reply)(Err(ProposeError::Indeterminate));
        }
        for (_, WaitingRead { read, .. }) in std::mem::take(&mut self.reads_waiting_index) {
            read(Err(ReadError::Stopped));
        }
        for (_, read) in std::mem::take(&mut self.reads_waiting_apply) {
            read(Err(ReadError::Stopped));
        }
        self.sm
    }

    /// Sends `messages` as one batch per peer, each in the core's order.
    fn send(&self, mut messages: Vec<Message>) {
        messages.sort_by_key(|m| m.to); // Stable: keeps each peer's order.
        while let Some(to) = messages.last().map(|m| m.to) {
            let start = messages.partition_point(|m| m.to < to);
            let batch = if start == 0 {
                std::mem::take(&mut messages)
            } else {
                messages.split_off(start)
            };
            self.transport.send(to, batch);
        }
    }

    /// Applies a Ready's committed entries: the commands go to the state
    /// machine as one batch, then every waiting proposal is answered in log
    /// order. A command that does not decode, or a batch answered with the
    /// wrong number of responses, is fatal: nothing is answered.
    fn apply_entries(&mut self, entries: &[Entry]) -> Result<(), Fatal<L::Error>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last) = (first.index, last.index);
        let mut batch = Vec::new();
        for e in entries {
            if e.kind == EntryKind::Normal && !e.data.is_empty() {
                let command = postcard::from_bytes::<S::Command>(&e.data).map_err(|err| {
                    Fatal::Undecodable {
                        index: e.index,
                        reason: err.to_string(),
                    }
                })?;
                batch.push((e.index, command));
            }
        }
        let indexes: Vec<Index> = batch.iter().map(|(i, _)| *i).collect();
        let responses = self.sm.apply_batch(batch);
        if responses.len() != indexes.len() {
            return Err(Fatal::ResponseCount {
                first,
                last,
                commands: indexes.len(),
                responses: responses.len(),
            });
        }
        let mut responses = indexes.into_iter().zip(responses).peekable();
        let oldest_forwarded = self.forwarded.values().map(|f| f.applied_then).min();
        for e in entries {
            let response = responses.next_if(|(i, _)| *i == e.index).map(|(_, r)| r);
            // Proposals at lower indexes were overwritten and never got here.
            self.settle_before(e.index, ProposeError::Lost);
            if e.kind == EntryKind::ConfChange {
                self.record_addresses(&e.data);
                if let Some(w) = self.changes.remove(&e.index) {
                    let result = if w.term == e.term {
                        Ok(self.raw.conf_state())
                    } else {
                        Err(ProposeError::Lost)
                    };
                    (w.reply)(result);
                }
            }
            if let Some(w) = self.proposals.remove(&e.index) {
                let result = match response {
                    Some(r) if w.term == e.term => Ok(r),
                    _ => Err(ProposeError::Lost),
                };
                (w.reply)(result);
            } else if let (Some(r), Some(oldest)) = (response, oldest_forwarded) {
                self.keep_for_late_answer(oldest, e.id(), r);
            }
        }
        self.applied = last;
        Ok(())
    }

    /// Keeps the response of an entry no one waited for, if it may be a
    /// forwarded proposal's whose answer from the leader has not come yet.
    /// `oldest` is the lowest applied index any waiting one was sent at.
    fn keep_for_late_answer(&mut self, oldest: Index, entry: EntryId, response: S::Response) {
        if entry.index <= oldest {
            return; // Before every waiting proposal was even sent.
        }
        if self.recent.len() == MAX_RECENT_RESPONSES {
            self.recent.pop_front();
        }
        self.recent.push_back((entry, response));
    }

    /// Updates the address book from a membership change's entry: the
    /// addresses it carries are learned, removed members forgotten.
    fn record_addresses(&mut self, data: &[u8]) {
        let Ok((change, context)) = ConfChange::decode_with_context(data) else {
            return; // The core refused it already, and said why.
        };
        for (id, address) in addresses::decode(&context) {
            self.learn_address(id, address);
        }
        if let ConfChange::Change { ops, .. } = change {
            for op in ops {
                if let ConfChangeOp::Remove(id) = op {
                    self.options.addresses.remove(id);
                }
            }
        }
    }

    fn learn_address(&mut self, id: NodeId, address: String) {
        if self.options.addresses.set(id, address.clone()) {
            self.transport.learn_address(id, &address);
        }
    }

    /// Every member's address as of what this replica applied: what a
    /// snapshot taken now must start with (see
    /// [`write_snapshot_head`]).
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.options.addresses.all()
    }

    /// Waiters below `index` can no longer be applied here: their entries
    /// were replaced (`Lost`), a snapshot skipped them (`Indeterminate`), or
    /// the replica stops (`Indeterminate`: they may commit without it).
    fn settle_before(&mut self, index: Index, error: ProposeError) {
        settle(&mut self.proposals, index, &error);
        settle(&mut self.changes, index, &error);
    }

    /// Entries were just written and the log ends at `last`: a waiter past
    /// `last` for an entry of an earlier term appended here had it cut off
    /// with the rest of a deposed leader's log. It may still commit
    /// through a member that kept it (`Indeterminate`); without this it
    /// would wait for an index an idle cluster may never reach.
    fn settle_cut_off(&mut self, last: Index) {
        let term = self.raw.term();
        settle_cut_off(&mut self.proposals, last, term);
        settle_cut_off(&mut self.changes, last, term);
    }

    fn run_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_waiting_apply)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.reads_waiting_apply = waiting;
        for (read_index, read) in ready {
            read(Ok(ReadView {
                state: &self.sm,
                read_index,
                applied,
            }));
        }
    }
}

/// Writes the head of a snapshot's data, before the state machine's part:
/// the address book as of the snapshot's index ([`Replica::addresses`]).
/// A replica reads it back when it installs the snapshot.
pub fn write_snapshot_head(
    addresses: &BTreeMap<NodeId, String>,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    addresses::write_to_snapshot(addresses, out)
}

/// Reads the head [`write_snapshot_head`] wrote: the address book. What
/// follows in `input` is the state machine's part.
pub fn read_snapshot_head(
    input: &mut dyn std::io::Read,
) -> Result<BTreeMap<NodeId, String>, String> {
    addresses::read_from_snapshot(input)
}

/// Refuses an empty command (through `reply` too): empty entries are the
/// leaders' no-ops, never applied. Hands `reply` back otherwise.
fn refuse_empty<R>(data: &[u8], reply: Reply<R>) -> Result<Reply<R>, ProposeError> {
    if !data.is_empty() {
        return Ok(reply);
    }
    let refusal = ProposeError::Encode(
        "the command encodes to no bytes; empty entries are reserved for leaders' no-ops".into(),
    );
    reply(Err(refusal.clone()));
    Err(refusal)
}

/// Answers every waiter below `index` with `error`.
/// Called for every applied entry, so it costs nothing when no waiter is below.
fn settle<R>(waiters: &mut BTreeMap<Index, Waiter<R>>, index: Index, error: &ProposeError) {
    while let Some(first) = waiters.first_entry() {
        if *first.key() >= index {
            break;
        }
        (first.remove().reply)(Err(error.clone()));
    }
}

/// Answers `Indeterminate` to the waiters past `last` whose entries, of a
/// term before `term`, were appended to this replica's log.
fn settle_cut_off<R>(waiters: &mut BTreeMap<Index, Waiter<R>>, last: Index, term: u64) {
    let cut: Vec<Index> = waiters
        .range(last + 1..)
        .filter(|(_, w)| w.in_own_log && w.term < term)
        .map(|(index, _)| *index)
        .collect();
    for index in cut {
        if let Some(waiter) = waiters.remove(&index) {
            (waiter.reply)(Err(ProposeError::Indeterminate));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use keel_raft::Config;
    use rand::SeedableRng;

    use super::*;

    /// A log store over the core's `MemStorage` whose writes fail on demand.
    struct Store {
        mem: MemStorage,
        broken: bool,
    }

    impl LogStore for Store {
        type Error = io::Error;

        fn persist(
            &mut self,
            entries: &[Entry],
            hard_state: Option<HardState>,
        ) -> Result<(), io::Error> {
            if self.broken {
                return Err(io::Error::other("disk gone"));
            }
            self.mem.append(entries).map_err(io::Error::other)?;
            if let Some(hs) = hard_state {
                self.mem.set_hard_state(hs);
            }
            Ok(())
        }

        fn set_conf_state(&mut self, conf_state: ConfState) {
            self.mem.set_conf_state(conf_state);
        }

        fn receive_chunk(&mut self, _: SnapshotChunk) -> Result<(), io::Error> {
            unreachable!("a single node receives no snapshot")
        }

        fn install_snapshot(&mut self, _: SnapshotMeta, _: Restore<'_>) -> Result<(), io::Error> {
            unreachable!("a single node receives no snapshot")
        }
    }

    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&self, _: NodeId, _: Vec<Message>) {}
    }

    /// Sums commands.
    #[derive(Default)]
    struct Count(u64);

    impl StateMachine for Count {
        type Command = u8;
        type Response = u64;
        type Snapshot = u64;

        fn apply(&mut self, _: Index, n: u8) -> u64 {
            self.0 += u64::from(n);
            self.0
        }

        fn snapshot(&self) -> u64 {
            self.0
        }

        fn write_snapshot(_: u64, _: &mut dyn std::io::Write) -> io::Result<()> {
            Ok(())
        }

        fn restore(&mut self, _: &mut dyn Read) -> Result<(), String> {
            Ok(())
        }
    }

    type Outcomes = Arc<Mutex<Vec<Result<u64, ProposeError>>>>;

    fn leader() -> Replica<Count, Store, Nowhere> {
        let mem = MemStorage::with_voters(&[1]);
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(1));
        let raw = RawNode::new(Config::new(1), mem.clone(), rng).unwrap();
        let store = Store { mem, broken: false };
        let mut replica = Replica::new(raw, store, Count::default(), Nowhere, Default::default());
        replica.raw.campaign();
        drain(&mut replica).unwrap();
        replica
    }

    fn drain<T: Transport>(replica: &mut Replica<Count, Store, T>) -> Result<(), Fatal<io::Error>> {
        while let Some(ready) = replica.ready() {
            replica.handle_ready(ready)?;
        }
        Ok(())
    }

    fn propose(replica: &mut Replica<Count, Store, Nowhere>, outcomes: &Outcomes) {
        let data = Bytes::from(postcard::to_allocvec(&1u8).unwrap());
        propose_raw(replica, outcomes, data).unwrap();
    }

    fn propose_raw(
        replica: &mut Replica<Count, Store, Nowhere>,
        outcomes: &Outcomes,
        data: Bytes,
    ) -> Result<EntryId, ProposeError> {
        let outcomes = outcomes.clone();
        let reply = Box::new(move |r| outcomes.lock().unwrap().push(r));
        replica.propose(data, reply)
    }

    #[test]
    fn a_command_that_encodes_to_nothing_is_refused() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        let refused = propose_raw(&mut replica, &outcomes, Bytes::new()).unwrap_err();
        assert!(matches!(refused, ProposeError::Encode(_)), "{refused}");
        assert_eq!(*outcomes.lock().unwrap(), vec![Err(refused)]);
    }

    #[test]
    fn proposals_are_answered_once_applied() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        propose(&mut replica, &outcomes);
        propose(&mut replica, &outcomes);
        drain(&mut replica).unwrap();
        assert_eq!(*outcomes.lock().unwrap(), vec![Ok(1), Ok(2)]);
    }

    /// A leader of three whose proposals were never acknowledged is deposed:
    /// the new leader's first entry replaces them in its log, so they are
    /// answered `Indeterminate` at once (they may still commit through a
    /// member that holds them), not left waiting for indexes an idle
    /// cluster never reaches.
    #[test]
    fn proposals_cut_off_a_deposed_leaders_log_are_answered() {
        let mem = MemStorage::with_voters(&[1, 2, 3]);
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(1));
        let mut config = Config::new(1);
        config.pre_vote = false;
        let raw = RawNode::new(config, mem.clone(), rng).unwrap();
        let store = Store { mem, broken: false };
        let mut replica = Replica::new(raw, store, Count::default(), Nowhere, Default::default());
        replica.raw.campaign();
        drain(&mut replica).unwrap();
        let term = replica.raw.term();
        let message = |term, body| Message {
            from: 2,
            to: 1,
            term,
            body,
        };
        replica
            .step(message(
                term,
                keel_raft::MessageBody::VoteResponse(keel_raft::VoteResponse {
                    pre_vote: false,
                    granted: true,
                }),
            ))
            .unwrap();
        drain(&mut replica).unwrap();
        assert_eq!(replica.raw.role(), keel_raft::Role::Leader);
        let outcomes = Outcomes::default();
        for _ in 0..3 {
            propose(&mut replica, &outcomes);
        }
        drain(&mut replica).unwrap();
        assert!(outcomes.lock().unwrap().is_empty(), "nothing committed");
        // Node 2 leads a term later with only its own first entry.
        let first = Entry {
            term: term + 1,
            index: 1,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        let append = keel_raft::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![first],
            commit: 0,
        };
        replica
            .step(message(term + 1, keel_raft::MessageBody::Append(append)))
            .unwrap();
        drain(&mut replica).unwrap();
        assert_eq!(
            *outcomes.lock().unwrap(),
            vec![Err(ProposeError::Indeterminate); 3]
        );
    }

    /// Waits for the leader's answer to a forwarded proposal, as if it had
    /// been sent now; the outcome lands in `outcomes`.
    fn await_answer(replica: &mut Replica<Count, Store, Nowhere>, outcomes: &Outcomes) -> u64 {
        let request = replica.next_request();
        let outcomes = outcomes.clone();
        let waiting = Forwarded {
            deadline: replica.ticks + 10,
            applied_then: replica.applied,
            reply: Box::new(move |r| outcomes.lock().unwrap().push(r)),
        };
        replica.forwarded.insert(request, waiting);
        request
    }

    /// Appends and applies a command no one here waits for (another
    /// member's, or a forwarded one's whose answer is late).
    fn apply_unwaited(replica: &mut Replica<Count, Store, Nowhere>) -> EntryId {
        let data = Bytes::from(postcard::to_allocvec(&1u8).unwrap());
        let id = replica.raw.propose(data).unwrap();
        drain(replica).unwrap();
        id
    }

    /// The leader's answer can come after the entry was applied here (a
    /// transport that reorders): the response was kept for it.
    #[test]
    fn an_answer_that_comes_after_its_entry_was_applied_still_gets_the_response() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        let request = await_answer(&mut replica, &outcomes);
        let id = apply_unwaited(&mut replica);
        apply_unwaited(&mut replica);
        replica.forward_answered(request, Ok(id));
        assert_eq!(*outcomes.lock().unwrap(), vec![Ok(1)]);
        assert!(replica.recent.is_empty(), "nothing kept once none waits");
    }

    /// An answer naming an entry whose term differs from the one applied
    /// there: the proposal's entry was replaced, so it was not applied.
    #[test]
    fn a_late_answer_for_an_entry_replaced_since_is_lost() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        let request = await_answer(&mut replica, &outcomes);
        let id = apply_unwaited(&mut replica);
        let replaced = EntryId {
            term: id.term - 1,
            index: id.index,
        };
        replica.forward_answered(request, Ok(replaced));
        assert_eq!(*outcomes.lock().unwrap(), vec![Err(ProposeError::Lost)]);
    }

    /// A late answer whose response was not kept (the entry came before the
    /// proposal was even sent, as from a confused peer, or too many came
    /// since) cannot be answered for sure: `Indeterminate`, never `Lost`.
    #[test]
    fn a_late_answer_whose_response_was_not_kept_is_indeterminate() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        let before = apply_unwaited(&mut replica);
        let request = await_answer(&mut replica, &outcomes);
        replica.forward_answered(request, Ok(before));
        assert_eq!(
            *outcomes.lock().unwrap(),
            vec![Err(ProposeError::Indeterminate)]
        );
    }

    /// An answer that comes first makes the proposal wait for its entry
    /// like one of this node's own; a refusal is passed on as it came.
    #[test]
    fn an_answer_in_time_waits_for_the_entry_and_a_refusal_is_passed_on() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        let request = await_answer(&mut replica, &outcomes);
        let data = Bytes::from(postcard::to_allocvec(&2u8).unwrap());
        let id = replica.raw.propose(data).unwrap();
        replica.forward_answered(request, Ok(id));
        assert!(outcomes.lock().unwrap().is_empty());
        drain(&mut replica).unwrap();
        let refused = await_answer(&mut replica, &outcomes);
        let refusal = keel_raft::ProposeError::TransferInProgress { to: 2 };
        replica.forward_answered(refused, Err(refusal.clone()));
        assert_eq!(
            *outcomes.lock().unwrap(),
            vec![Ok(2), Err(ProposeError::Refused(refusal))]
        );
    }

    /// No answer within the timeout: the proposal may have been appended.
    #[test]
    fn a_forwarded_proposal_never_answered_is_indeterminate() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        await_answer(&mut replica, &outcomes);
        for _ in 0..10 {
            replica.tick();
        }
        assert_eq!(
            *outcomes.lock().unwrap(),
            vec![Err(ProposeError::Indeterminate)]
        );
    }

    /// Sends every message into a list.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Message>>>);

    impl Transport for Recorder {
        fn send(&self, _: NodeId, messages: Vec<Message>) {
            self.0.lock().unwrap().extend(messages);
        }
    }

    /// A follower's read whose request to the leader was lost asks again
    /// every `read_retry_ticks`, with the same id; the first answer runs
    /// it, once.
    #[test]
    fn a_followers_read_asks_the_leader_again_until_answered() {
        let mem = MemStorage::with_voters(&[1, 2]);
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(1));
        let raw = RawNode::new(Config::new(1), mem.clone(), rng).unwrap();
        let store = Store { mem, broken: false };
        let sent = Recorder::default();
        let options = ReplicaOptions {
            read_timeout_ticks: 20,
            read_retry_ticks: 3,
            ..Default::default()
        };
        let mut replica = Replica::new(raw, store, Count::default(), sent.clone(), options);
        // Node 2 leads term 1: its heartbeat makes this replica its follower.
        replica
            .step(Message {
                from: 2,
                to: 1,
                term: 1,
                body: keel_raft::MessageBody::Heartbeat(keel_raft::Heartbeat {
                    commit: 0,
                    read_round: 0,
                }),
            })
            .unwrap();
        drain(&mut replica).unwrap();
        let ran = Arc::new(Mutex::new(0));
        let counter = ran.clone();
        replica.read(Box::new(move |view| {
            view.expect("the read is confirmed");
            *counter.lock().unwrap() += 1;
        }));
        drain(&mut replica).unwrap();
        let asked = || -> Vec<u64> {
            sent.0
                .lock()
                .unwrap()
                .iter()
                .filter_map(|m| match m.body {
                    keel_raft::MessageBody::ReadIndex { request } => Some(request),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(asked().len(), 1);
        for _ in 0..7 {
            replica.tick();
            drain(&mut replica).unwrap();
        }
        let requests = asked();
        assert_eq!(requests.len(), 3, "asked at ticks 0, 3 and 6: {requests:?}");
        assert!(requests.iter().all(|r| *r == requests[0]), "{requests:?}");
        // Two answers to the same request: the read runs once.
        for _ in 0..2 {
            replica
                .step(Message {
                    from: 2,
                    to: 1,
                    term: 1,
                    body: keel_raft::MessageBody::ReadIndexResponse {
                        request: requests[0],
                        index: 0,
                    },
                })
                .unwrap();
            drain(&mut replica).unwrap();
        }
        assert_eq!(*ran.lock().unwrap(), 1);
        for _ in 0..30 {
            replica.tick();
        }
        assert_eq!(asked().len(), 3, "an answered read is not asked again");
        assert_eq!(*ran.lock().unwrap(), 1);
    }

    #[test]
    fn a_failed_write_is_fatal_and_stopping_answers_whoever_waits() {
        let mut replica = leader();
        let outcomes = Outcomes::default();
        replica.store.broken = true;
        propose(&mut replica, &outcomes);
        let read_failed = Arc::new(Mutex::new(None));
        let seen = read_failed.clone();
        replica.read(Box::new(
            move |view: Result<ReadView<'_, Count>, ReadError>| {
                *seen.lock().unwrap() = view.err();
            },
        ));
        let err = drain(&mut replica).unwrap_err();
        assert!(matches!(err, Fatal::Store(_)), "{err}");
        assert!(outcomes.lock().unwrap().is_empty(), "nothing answered yet");
        replica.stop();
        // The entry is in the log: it may yet commit elsewhere.
        assert_eq!(
            *outcomes.lock().unwrap(),
            vec![Err(ProposeError::Indeterminate)]
        );
        assert_eq!(*read_failed.lock().unwrap(), Some(ReadError::Stopped));
    }
}
