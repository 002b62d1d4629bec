//! Never trust input: malformed messages are refused with typed errors.

use super::*;

// ----- bad input --------------------------------------------------------------------

type ErrorCheck = fn(&StepError) -> bool;

/// Never trust input: a malformed or impossible message is refused with a
/// typed error and changes nothing — no state, and no answer goes back.
#[test]
fn bad_input_is_refused_with_a_typed_error_and_changes_nothing() {
    // Node 1 led term 1, node 2 leads term 2: every log is [1, 1, 2, 2], all committed.
    let mut net = Network::with_config(3, |c| c.check_quorum = false);
    net.elect(1);
    net.propose(1, 1).unwrap();
    net.stabilize();
    net.elect(2);
    net.propose(2, 1).unwrap();
    net.stabilize();
    for id in [1, 2, 3] {
        assert_eq!((net.log(id), net.commit(id)), (vec![1, 1, 2, 2], 4));
    }
    let invalid: ErrorCheck = |e| matches!(e, StepError::InvalidMessage { .. });
    let bad_append = MessageBody::Append(Append {
        prev_index: 4,
        prev_term: 2,
        entries: vec![
            Entry::normal(2, 5, Bytes::new()),
            Entry::normal(2, 7, Bytes::new()),
        ],
        commit: 4,
    });
    let cases: Vec<(&str, NodeId, Message, ErrorCheck)> = vec![
        ("term 0", 1, msg(2, 1, 0, heartbeat(4)), invalid),
        ("wrong recipient", 1, msg(2, 3, 2, heartbeat(4)), |e| {
            *e == StepError::WrongRecipient { to: 3, me: 1 }
        }),
        // Requests from unknown senders are taken (a lagging node may not
        // know every member yet); answers must come from known peers.
        (
            "unknown sender",
            1,
            msg(
                9,
                1,
                2,
                MessageBody::HeartbeatResponse(HeartbeatResponse::default()),
            ),
            |e| *e == StepError::UnknownPeer(9),
        ),
        (
            "non-contiguous entries",
            1,
            msg(2, 1, 2, bad_append),
            invalid,
        ),
        (
            "entry term above the message term",
            1,
            msg(2, 1, 2, append((4, 2), &[3], 4)),
            invalid,
        ),
        (
            "prev_term above the message term",
            1,
            msg(2, 1, 2, append((4, 3), &[], 4)),
            invalid,
        ),
        (
            "vote request with a last entry of term 1 at index 0",
            1,
            msg(3, 1, 3, vote((0, 1), false)),
            invalid,
        ),
        (
            "heartbeat commit beyond the follower's log",
            1,
            msg(2, 1, 2, heartbeat(9)),
            invalid,
        ),
        (
            "append overwriting committed entries",
            1,
            msg(2, 1, 2, append((1, 1), &[2, 2], 4)),
            invalid,
        ),
        (
            "acknowledgement beyond the leader's last index",
            2,
            msg(1, 2, 2, MessageBody::AppendResponse(Accepted { index: 9 })),
            invalid,
        ),
        (
            "refusal beyond the leader's last index",
            2,
            msg(
                1,
                2,
                2,
                MessageBody::AppendResponse(Rejected {
                    rejected_index: 9,
                    hint_index: 4,
                    hint_term: 2,
                }),
            ),
            invalid,
        ),
        (
            "refusal hinting past the refused index",
            2,
            msg(
                1,
                2,
                2,
                MessageBody::AppendResponse(Rejected {
                    rejected_index: 3,
                    hint_index: 4,
                    hint_term: 2,
                }),
            ),
            invalid,
        ),
        (
            "a second leader in the same term",
            2,
            msg(3, 2, 2, append((4, 2), &[], 4)),
            invalid,
        ),
    ];
    for (what, id, m, expected) in cases {
        let before = net.snapshot(id);
        let got = net.raw(id).step(m);
        assert!(matches!(&got, Err(e) if expected(e)), "{what}: got {got:?}");
        assert_eq!(net.snapshot(id), before, "{what}");
        assert!(!net.raw(id).has_ready(), "{what}: something would go back");
    }
}

#[derive(Clone, Debug)]
enum Input {
    Step(Message),
    /// Enough ticks, now and then, for timeouts to fire.
    Tick(u32),
    Propose,
}

/// Mostly small numbers, sometimes the largest.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![20 => 0u64..8, 1 => Just(u64::MAX)]
}

fn arb_body() -> impl Strategy<Value = MessageBody> {
    let entries = prop::collection::vec((number(), number(), 0u64..2), 0..4);
    prop_oneof![
        (number(), number(), entries, number(), any::<bool>()).prop_map(
            |(prev_index, prev_term, raw, commit, well_formed)| {
                // Well-formed entries get past validation, to the deeper checks.
                let mut term = prev_term;
                let entries = raw
                    .into_iter()
                    .zip(1u64..)
                    .map(|((index, any_term, step), k)| {
                        if !well_formed {
                            return Entry::normal(any_term, index, Bytes::new());
                        }
                        term = term.saturating_add(step);
                        Entry::normal(term, prev_index.wrapping_add(k), Bytes::new())
                    })
                    .collect();
                MessageBody::Append(Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                })
            }
        ),
        (number(), number(), number(), any::<bool>()).prop_map(
            |(index, hint_index, hint_term, ok)| {
                MessageBody::AppendResponse(if ok {
                    Accepted { index }
                } else {
                    Rejected {
                        rejected_index: index,
                        hint_index,
                        hint_term,
                    }
                })
            }
        ),
        number().prop_map(heartbeat),
        Just(MessageBody::HeartbeatResponse(HeartbeatResponse::default())),
        (number(), number(), any::<bool>()).prop_map(|(index, term, pre)| vote((index, term), pre)),
        (any::<bool>(), any::<bool>()).prop_map(|(pre, granted)| vote_response(pre, granted)),
    ]
}

fn arb_input() -> impl Strategy<Value = Input> {
    // Mostly from a peer to node 1, sometimes from nobody, itself or a stranger.
    let from = prop_oneof![9 => 2u64..4, 1 => 0u64..5];
    let to = prop_oneof![9 => Just(1u64), 1 => 0u64..5];
    let term = prop_oneof![20 => 0u64..10, 1 => Just(u64::MAX)];
    prop_oneof![
        8 => (from, to, term, arb_body())
            .prop_map(|(from, to, term, body)| Input::Step(msg(from, to, term, body))),
        1 => (1u32..25).prop_map(Input::Tick),
        1 => Just(Input::Propose),
    ]
}

proptest! {
    /// Never trust input: whatever arrives, in whatever role, the node does not
    /// panic, its term never goes back, and its committed entries never change.
    #[test]
    fn arbitrary_messages_never_panic_nor_undo_term_or_commit(
        role in prop::sample::select(ROLES.to_vec()),
        inputs in prop::collection::vec(arb_input(), 1..40),
    ) {
        let mut net = in_role(role, |_| {});
        for input in inputs {
            let (term, commit) = (net.term(1), net.commit(1));
            let committed = net.log(1)[..commit as usize].to_vec();
            match input {
                Input::Step(m) => {
                    let _ = net.raw(1).step(m);
                }
                Input::Tick(n) => (0..n).for_each(|_| net.raw(1).tick()),
                Input::Propose => {
                    let _ = net.propose(1, 1);
                }
            }
            let _ = net.ready(1);
            prop_assert!(net.term(1) >= term);
            prop_assert!(net.commit(1) >= commit);
            prop_assert_eq!(&net.log(1)[..commit as usize], &committed[..]);
        }
    }
}
