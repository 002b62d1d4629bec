//! The log payload and what applying it returns.

use prost::Message;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::pb::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, PutResponse, TxnResponse,
};
use crate::pb::keelpb;

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
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
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
    /// The command was applied before (a replay after restart); its
    /// original response is gone.
    AlreadyApplied,
}
