//! A broker fleet using keel as its placement center, through the etcd API
//! alone: each broker registers under `/brokers/` with a lease it keeps
//! alive, stands for controller with the Election API, and watches the
//! membership. Then the controller dies (its keep-alives stop): its
//! registration vanishes when its lease runs out, every broker sees it go,
//! and another broker takes over as controller.
//!
//! Against a running three-member cluster (`keel cluster`, or etcd):
//!
//! ```text
//! cargo run --release -p keel-server --example placement_center -- \
//!     127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::watch_client::WatchClient;
use keel_api::etcdserverpb::*;
use keel_api::mvccpb::event::EventType;
use keel_api::v3electionpb::election_client::ElectionClient;
use keel_api::v3electionpb::{CampaignRequest, LeaderRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A broker's lease: short, so a dead broker is noticed within seconds.
const TTL: i64 = 2;

async fn connect(endpoint: &str) -> Result<Channel, Error> {
    Ok(Channel::from_shared(format!("http://{endpoint}"))?
        .connect()
        .await?)
}

/// One broker: registers, keeps its lease alive, and stands for
/// controller. Runs until aborted (the broker dies).
async fn broker(name: String, endpoint: String) -> Result<(), Error> {
    let channel = connect(&endpoint).await?;
    let lease = LeaseClient::new(channel.clone())
        .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
        .await?
        .into_inner()
        .id;
    KvClient::new(channel.clone())
        .put(PutRequest {
            key: Bytes::from(format!("/brokers/{name}")),
            value: Bytes::from(endpoint.clone()),
            lease,
            ..Default::default()
        })
        .await?;
    // Dropped with the broker (when it dies), so its keep-alives stop.
    let _keep_alive = AbortOnDrop(tokio::spawn(keep_alive(channel.clone(), lease)));
    let elected = ElectionClient::new(channel)
        .campaign(CampaignRequest {
            name: Bytes::from_static(b"/controller"),
            lease,
            value: Bytes::from(name.clone()),
        })
        .await?;
    drop(elected);
    println!("  {name}: elected controller");
    std::future::pending::<()>().await;
    Ok(())
}

/// Keeps `lease` alive, twice a second, until dropped.
async fn keep_alive(channel: Channel, lease: i64) -> Result<(), Error> {
    let (requests, request_stream) = mpsc::channel(1);
    let mut answers = LeaseClient::new(channel)
        .lease_keep_alive(ReceiverStream::new(request_stream))
        .await?
        .into_inner();
    loop {
        requests.send(LeaseKeepAliveRequest { id: lease }).await?;
        answers.message().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prints membership changes under `/brokers/` as one broker sees them,
/// and reports departures on `left`.
async fn watch_membership(endpoint: String, left: mpsc::Sender<String>) -> Result<(), Error> {
    let (requests, request_stream) = mpsc::channel(1);
    requests
        .send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: Bytes::from_static(b"/brokers/"),
                    range_end: Bytes::from_static(b"/brokers0"),
                    ..Default::default()
                },
            )),
        })
        .await?;
    let mut responses = WatchClient::new(connect(&endpoint).await?)
        .watch(ReceiverStream::new(request_stream))
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        for event in response.events {
            let key = String::from_utf8_lossy(&event.kv.unwrap_or_default().key).into_owned();
            if event.r#type == EventType::Delete as i32 {
                println!("  membership: {key} left");
                left.send(key).await?;
            } else {
                println!("  membership: {key} joined");
            }
        }
    }
    Ok(())
}

async fn controller(endpoint: &str) -> Result<Option<String>, Error> {
    let leader = ElectionClient::new(connect(endpoint).await?)
        .leader(LeaderRequest {
            name: Bytes::from_static(b"/controller"),
        })
        .await;
    Ok(leader
        .ok()
        .and_then(|l| l.into_inner().kv)
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

async fn wait_for<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoints: Vec<String> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let (left, mut departures) = mpsc::channel(16);
    tokio::spawn(watch_membership(endpoints[0].clone(), left));
    tokio::time::sleep(Duration::from_millis(200)).await;

    println!("three brokers join, each through its own member:");
    let mut brokers = Vec::new();
    for (n, endpoint) in endpoints.iter().cycle().take(3).enumerate() {
        let name = format!("broker-{n}");
        brokers.push((name.clone(), tokio::spawn(broker(name, endpoint.clone()))));
        // Join in order, so broker-0 is the first candidate.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let first = wait_for("a controller", async || controller(&endpoints[1]).await).await?;
    println!("controller: {first}");

    println!("{first} dies:");
    let died = Instant::now();
    let (_, task) = brokers
        .iter()
        .find(|(name, _)| *name == first)
        .ok_or("the controller is not one of ours")?;
    task.abort();
    let gone = tokio::time::timeout(Duration::from_secs(15), departures.recv())
        .await?
        .ok_or("the membership watch ended")?;
    if gone != format!("/brokers/{first}") {
        return Err(format!("{gone} left instead of {first}").into());
    }
    let next = wait_for("a new controller", async || {
        Ok(controller(&endpoints[2]).await?.filter(|c| *c != first))
    })
    .await?;
    println!(
        "controller: {next} ({:.1} s after {first} died; its lease was {TTL} s)",
        died.elapsed().as_secs_f64()
    );
    for (_, task) in &brokers {
        task.abort();
    }
    Ok(())
}
