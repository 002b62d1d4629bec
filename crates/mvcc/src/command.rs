//! The log payload and what applying it returns.

use prost::Message;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use keel_api::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};
use keel_api::keelpb::{self, outcome::Result as Sent, LeaseRenewed, Outcome};

use crate::MvccError;

/// A write command as it travels through the raft log: keel's protobuf
/// [`keelpb::Command`], carried by serde as its protobuf bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Command(pub keelpb::Command);

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Command;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("protobuf bytes of a keel command")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Command, E> {
                keelpb::Command::decode(v)
                    .map(Command)
                    .map_err(|e| E::custom(format!("decoding a command: {e}")))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResponse {
    /// A put's response.
    Put(PutResponse),
    /// A delete's response.
    DeleteRange(DeleteRangeResponse),
    /// A transaction's response.
    Txn(TxnResponse),
    /// A compaction's response.
    Compact(CompactionResponse),
    /// A member record was set or removed.
    Member,
    /// An alarm request's response.
    Alarm(AlarmResponse),
    /// A lease was granted.
    LeaseGrant(LeaseGrantResponse),
    /// A lease was revoked.
    LeaseRevoke(LeaseRevokeResponse),
    /// Leases were renewed: each one's TTL, 0 for one that does not exist.
    LeaseRenew(Vec<i64>),
    /// Whether an expiry took the lease (false: renewed since, or gone).
    LeaseExpire(bool),
    /// An auth change was applied (or changed nothing).
    Auth,
    /// The command was applied before (a replay after restart); its
    /// original response is gone.
    AlreadyApplied,
}

impl WriteResponse {
    /// The wire form in which the leader answers a member that forwarded
    /// the command. `AlreadyApplied` has none: a fresh proposal is never a
    /// replay.
    pub fn into_outcome(self) -> Result<Outcome, MvccError> {
        let result = match self {
            WriteResponse::Put(r) => Sent::Put(r),
            WriteResponse::DeleteRange(r) => Sent::DeleteRange(r),
            WriteResponse::Txn(r) => Sent::Txn(r),
            WriteResponse::Compact(r) => Sent::Compact(r),
            WriteResponse::Alarm(r) => Sent::Alarm(r),
            WriteResponse::Member => Sent::Member(true),
            WriteResponse::LeaseGrant(r) => Sent::LeaseGrant(r),
            WriteResponse::LeaseRevoke(r) => Sent::LeaseRevoke(r),
            WriteResponse::LeaseRenew(ttls) => Sent::LeaseRenew(LeaseRenewed { ttls }),
            WriteResponse::LeaseExpire(expired) => Sent::LeaseExpire(expired),
            WriteResponse::Auth => Sent::Auth(true),
            WriteResponse::AlreadyApplied => {
                return Err(MvccError::InvalidArgument(
                    "a fresh proposal was reported as replayed".into(),
                ))
            }
        };
        Ok(Outcome {
            result: Some(result),
        })
    }

    /// A forwarded command's response from its wire form (an empty one is
    /// a peer speaking nonsense).
    pub fn from_outcome(outcome: Outcome) -> Result<WriteResponse, MvccError> {
        Ok(match outcome.result {
            Some(Sent::Put(r)) => WriteResponse::Put(r),
            Some(Sent::DeleteRange(r)) => WriteResponse::DeleteRange(r),
            Some(Sent::Txn(r)) => WriteResponse::Txn(r),
            Some(Sent::Compact(r)) => WriteResponse::Compact(r),
            Some(Sent::Alarm(r)) => WriteResponse::Alarm(r),
            Some(Sent::Member(_)) => WriteResponse::Member,
            Some(Sent::LeaseGrant(r)) => WriteResponse::LeaseGrant(r),
            Some(Sent::LeaseRevoke(r)) => WriteResponse::LeaseRevoke(r),
            Some(Sent::LeaseRenew(r)) => WriteResponse::LeaseRenew(r.ttls),
            Some(Sent::LeaseExpire(expired)) => WriteResponse::LeaseExpire(expired),
            Some(Sent::Auth(_)) => WriteResponse::Auth,
            None => {
                return Err(MvccError::Corrupt(
                    "the leader answered a forwarded command with an empty outcome".into(),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_and_nonsense_is_refused() {
        let responses = [
            WriteResponse::Put(PutResponse::default()),
            WriteResponse::DeleteRange(DeleteRangeResponse {
                deleted: 2,
                ..Default::default()
            }),
            WriteResponse::Txn(TxnResponse {
                succeeded: true,
                ..Default::default()
            }),
            WriteResponse::Compact(CompactionResponse::default()),
            WriteResponse::Alarm(AlarmResponse::default()),
            WriteResponse::Member,
            WriteResponse::LeaseGrant(LeaseGrantResponse {
                id: 7,
                ttl: 60,
                ..Default::default()
            }),
            WriteResponse::LeaseRevoke(LeaseRevokeResponse::default()),
            WriteResponse::LeaseRenew(vec![60, 0]),
            WriteResponse::LeaseExpire(true),
            WriteResponse::Auth,
        ];
        for response in responses {
            let outcome = response.clone().into_outcome().unwrap();
            assert_eq!(WriteResponse::from_outcome(outcome).unwrap(), response);
        }
        assert!(WriteResponse::AlreadyApplied.into_outcome().is_err());
        assert!(WriteResponse::from_outcome(Outcome::default()).is_err());
    }
}
