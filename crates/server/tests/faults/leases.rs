//! The lease workload: clients grant leases, attach a key to each, keep
//! them alive for a while (reading the key all along), then revoke them or
//! let them expire. keel-check's `check_leases` then says whether any lease
//! ran out before its TTL after its last acknowledged keep-alive, and
//! whether an expired lease's key is left on any member.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::*;
use keel_check::LeaseLife;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::since;
use crate::world::{channel, Client};

/// Every lease's TTL.
pub(crate) const TTL_SECS: i64 = 3;
/// Lease clients.
pub(crate) const CLIENTS: usize = 2;
/// How long one call may take before it counts as lost.
const PATIENCE: Duration = Duration::from_secs(2);

/// A keep-alive stream to one member.
struct KeepAlive {
    member: usize,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlive {
    async fn open(member: usize, channel: Channel) -> Option<KeepAlive> {
        let (requests, stream) = mpsc::channel(4);
        let responses = tokio::time::timeout(
            PATIENCE,
            LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(stream)),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        Some(KeepAlive {
            member,
            requests,
            responses,
        })
    }

    /// One keep-alive: the TTL the member answered (0: the lease is gone),
    /// or `None` if no answer came.
    async fn renew(&mut self, id: i64) -> Option<i64> {
        self.requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .ok()?;
        match tokio::time::timeout(PATIENCE, self.responses.message()).await {
            Ok(Ok(Some(answer))) => Some(answer.ttl),
            _ => None,
        }
    }
}

/// What the lease clients leave for the final checks.
#[derive(Default)]
pub(crate) struct LeaseRecord {
    /// Every lease's life as seen by its client.
    pub(crate) lives: Vec<LeaseLife>,
}

/// One client: leases one after another until `until`.
pub(crate) async fn client(c: Client, record: Arc<Mutex<LeaseRecord>>) {
    let (id, zero, until) = (c.id, c.zero, c.until);
    let mut rng = c.rng(0x1ea5_e000);
    let mut members = c.connections();
    let mut n = 0u64;
    while !c.done() {
        n += 1;
        let key = format!("lease/c{id}-{n}");
        // Grant, then attach the key; a failure of either starts over.
        let Some((member, c)) = members.any(&mut rng).await else {
            continue;
        };
        let granted_call = since(zero);
        let Ok(Ok(granted)) = tokio::time::timeout(
            PATIENCE,
            LeaseClient::new(c.clone()).lease_grant(LeaseGrantRequest {
                ttl: TTL_SECS,
                id: 0,
            }),
        )
        .await
        else {
            members.forget(member);
            continue;
        };
        let lease = granted.into_inner().id;
        let granted = (granted_call, since(zero));
        let attach_call = since(zero);
        let put = tokio::time::timeout(
            PATIENCE,
            KvClient::new(c).put(PutRequest {
                key: Bytes::from(key.clone()),
                value: Bytes::from_static(b"leased"),
                lease,
                ..Default::default()
            }),
        )
        .await;
        if !matches!(put, Ok(Ok(_))) {
            // The lease may or may not hold the key: it is left to expire.
            members.forget(member);
            continue;
        }
        let mut life = LeaseLife {
            lease,
            ttl_ns: Duration::from_secs(TTL_SECS as u64).as_nanos() as u64,
            key: key.clone(),
            granted,
            attached: (attach_call, since(zero)),
            keepalives: Vec::new(),
            observations: Vec::new(),
            revoked: None,
        };
        let kept_until = Instant::now() + Duration::from_millis(rng.random_range(1_000..6_000));
        let mut stream: Option<KeepAlive> = None;
        let mut next_renewal = Instant::now();
        let mut alive = true;
        while alive && Instant::now() < kept_until.min(until) {
            if Instant::now() >= next_renewal {
                if stream.is_none() {
                    if let Some((member, c)) = members.any(&mut rng).await {
                        stream = KeepAlive::open(member, c).await;
                    }
                }
                if let Some(s) = stream.as_mut() {
                    let call = since(zero);
                    match s.renew(lease).await {
                        Some(ttl) if ttl > 0 => {
                            life.keepalives.push((call, since(zero)));
                            next_renewal = Instant::now() + Duration::from_millis(700);
                        }
                        // The lease is gone, and its key with it.
                        Some(_) => {
                            life.observations.push((call, since(zero), false));
                            alive = false;
                        }
                        None => {
                            members.forget(s.member);
                            stream = None;
                        }
                    }
                }
            }
            // A linearizable read of the key through any member.
            if let Some((member, c)) = members.any(&mut rng).await {
                let call = since(zero);
                let read = tokio::time::timeout(
                    PATIENCE,
                    KvClient::new(c).range(RangeRequest {
                        key: Bytes::from(key.clone()),
                        ..Default::default()
                    }),
                )
                .await;
                match read {
                    Ok(Ok(r)) => {
                        let present = !r.into_inner().kvs.is_empty();
                        life.observations.push((call, since(zero), present));
                        alive &= present;
                    }
                    _ => members.forget(member),
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..300))).await;
        }
        if alive && rng.random_bool(0.3) {
            if let Some((_, c)) = members.any(&mut rng).await {
                let call = since(zero);
                let revoked = tokio::time::timeout(
                    PATIENCE,
                    LeaseClient::new(c).lease_revoke(LeaseRevokeRequest { id: lease }),
                )
                .await;
                if matches!(revoked, Ok(Ok(_))) {
                    life.revoked = Some((call, since(zero)));
                }
            }
        }
        record.lock().unwrap().lives.push(life);
    }
}

/// The leases whose key is still on some member (by a serializable read
/// of each member's own store), as `(lease, member name)`.
pub(crate) async fn still_present(
    lives: &[LeaseLife],
    members: &[(String, SocketAddr)],
) -> Result<Vec<(i64, String)>, String> {
    let mut present = Vec::new();
    for (name, addr) in members {
        let c = channel(*addr)
            .await
            .ok_or_else(|| format!("{name} does not connect"))?;
        let mut kv = KvClient::new(c);
        let kvs = kv
            .range(RangeRequest {
                key: Bytes::from_static(b"lease/"),
                range_end: Bytes::from_static(b"lease0"),
                serializable: true,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("{name}: {}", e.message()))?
            .into_inner()
            .kvs;
        for life in lives {
            if kvs.iter().any(|kv| kv.key == life.key.as_bytes()) {
                present.push((life.lease, name.clone()));
            }
        }
    }
    Ok(present)
}
