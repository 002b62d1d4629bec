//! `keel serve`: opens the store, finds out who this member is (bootstrap,
//! join or restart), starts the raft node, serves peers and clients, and
//! shuts down in order on a signal.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keel_mvcc::pb::etcdserverpb::{Member, MemberListRequest};
use keel_mvcc::pb::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{Store, StoreOptions};
use keel_node::{GrpcTransport, NodeConfig, NodeId, RaftNode, RaftService};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server as GrpcServer;
use tonic_health::ServingStatus;

use crate::auto_compaction::auto_compact;
use crate::backend::{Backend, Limits};
use crate::cluster::{promote_caught_up, ClusterService};
use crate::config::{host_port, ClusterState, Config};
use crate::forward::ForwardService;
use crate::identity::{self, Identity};
use crate::kv::KvService;
use crate::maintenance::MaintenanceService;
use crate::peers::Peers;
use crate::rpc::cluster_client::ClusterClient;
use crate::state_machine::{remove_compacted_history, MvccStateMachine};

/// How long a joining member keeps asking the cluster about itself.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);

/// Runs a member until `shutdown` resolves, then stops it cleanly: stop
/// accepting clients, let in-flight requests finish, stop the node (its
/// WAL is synced), close the peer port.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir.join("kv"), StoreOptions::default())
        .context("opening the key-value store")?;

    // Bind first: a port in use is reported before anything else happens.
    let peer_listener = TcpListener::bind(&config.listen_peer)
        .await
        .with_context(|| format!("listening for peers on {}", config.listen_peer))?;
    let mut client_listeners = Vec::new();
    for address in &config.listen_client {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("listening for clients on {address}"))?;
        client_listeners.push(listener);
    }

    let (identity, initial_members, addresses) = establish_identity(&config, &store).await?;
    tracing::info!(
        name = %config.name,
        member = %format!("{:x}", identity.member_id),
        cluster = %format!("{:x}", identity.cluster_id),
        peer = %config.advertise_peer_url,
        clients = ?config.advertise_client_urls,
        "starting"
    );

    let transport = GrpcTransport::new(identity.cluster_id, BTreeMap::new());
    let peers = Peers::new(transport.clone(), addresses);
    peers.update(&store.members());
    let mut node_config = NodeConfig::new(identity.member_id, config.data_dir.join("raft"));
    node_config.initial_members = initial_members;
    node_config.tick_interval = config.heartbeat_interval;
    node_config.election_ticks = config.election_ticks;
    node_config.snapshot_threshold = config.snapshot_count;
    let node = RaftNode::start(
        node_config,
        MvccStateMachine::new(store.clone(), peers.clone()),
        transport,
    )
    .context("starting the raft node")?;
    let backend = Arc::new(Backend::new(
        node.clone(),
        store,
        identity,
        peers,
        Limits {
            max_request_bytes: config.max_request_bytes,
            max_txn_ops: config.max_txn_ops,
            quota_backend_bytes: config.quota_backend_bytes,
            request_timeout: config.request_timeout,
        },
    ));

    let (stop_peers, peers_stopped) = watch::channel(false);
    let peer_server = GrpcServer::builder()
        .add_service(RaftService::new(identity.cluster_id, node.inbox()).into_server())
        .add_service(ClusterService(backend.clone()).into_server())
        .add_service(ForwardService(backend.clone()).into_server())
        .serve_with_incoming_shutdown(
            TcpIncoming::from(peer_listener).with_nodelay(Some(true)),
            signalled(peers_stopped),
        );
    let peer_server = tokio::spawn(peer_server);

    let (health, health_service) = tonic_health::server::health_reporter();
    let (stop_clients, clients_stopped) = watch::channel(false);
    let mut client_servers = Vec::new();
    for listener in client_listeners {
        let server = GrpcServer::builder()
            .add_service(KvService(backend.clone()).into_server())
            .add_service(ClusterService(backend.clone()).into_server())
            .add_service(
                MaintenanceService::new(backend.clone(), config.data_dir.join("tmp")).into_server(),
            )
            .add_service(health_service.clone())
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                signalled(clients_stopped.clone()),
            );
        client_servers.push(tokio::spawn(server));
    }
    tokio::spawn(report_health(backend.clone(), health.clone()));
    tokio::spawn(promote_caught_up(backend.clone()));
    tokio::spawn(remove_compacted_history(backend.clone()));
    if let Some(retention) = config.auto_compaction {
        tokio::spawn(auto_compact(backend.clone(), retention));
    }
    tokio::spawn(publish(backend.clone(), config.clone()));
    tracing::info!(clients = ?config.listen_client, peers = %config.listen_peer, "serving");

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = stop_clients.send(true);
    let grace = config.request_timeout + Duration::from_secs(1);
    for server in client_servers {
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "client server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "client server task failed"),
            Err(_) => tracing::warn!("client requests still running after the grace period"),
        }
    }
    node.stop().await;
    let _ = stop_peers.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), peer_server).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once `flag` turns true (or its sender is gone).
async fn signalled(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// This member's identity, the initial voters to bootstrap with (empty
/// unless starting a new cluster for the first time), and the peer
/// addresses known before the store has any member records.
async fn establish_identity(
    config: &Config,
    store: &Store,
) -> anyhow::Result<(Identity, BTreeMap<NodeId, String>, BTreeMap<NodeId, String>)> {
    let initial: BTreeMap<NodeId, String> = config
        .initial_cluster
        .iter()
        .map(|(_, url)| {
            let id = identity::initial_member_id(url, &config.cluster_token);
            Ok((id, host_port(url)?))
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(identity) = Identity::load(&config.data_dir)? {
        // A restart: the raft log knows the members; keep the configured
        // addresses as a fallback until the records are read.
        let addresses = match config.cluster_state {
            ClusterState::New => initial,
            ClusterState::Existing => BTreeMap::new(),
        };
        return Ok((identity, BTreeMap::new(), addresses));
    }
    if store.applied_index() > 0 {
        bail!(
            "{} holds a store but no identity.toml; refusing to guess which member this is",
            config.data_dir.display()
        );
    }
    let (identity, initial_members, addresses) = match config.cluster_state {
        ClusterState::New => {
            let identity = Identity {
                member_id: identity::initial_member_id(
                    &config.advertise_peer_url,
                    &config.cluster_token,
                ),
                cluster_id: identity::cluster_id(&config.initial_cluster, &config.cluster_token),
            };
            (identity, initial.clone(), initial)
        }
        ClusterState::Existing => {
            let (identity, members) = join(config).await?;
            let addresses = members
                .iter()
                .filter_map(|m| {
                    let url = m.peer_ur_ls.first()?;
                    Some((m.id, host_port(url).ok()?))
                })
                .collect();
            (identity, BTreeMap::new(), addresses)
        }
    };
    identity.save(&config.data_dir)?;
    Ok((identity, initial_members, addresses))
}

/// Asks the members listed in `initial_cluster` for the member list, and
/// finds this member in it by its advertised peer URL.
async fn join(config: &Config) -> anyhow::Result<(Identity, Vec<Member>)> {
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let others: Vec<&String> = config
        .initial_cluster
        .iter()
        .map(|(_, url)| url)
        .filter(|url| **url != config.advertise_peer_url)
        .collect();
    if others.is_empty() {
        bail!("initial_cluster lists no other member to join through");
    }
    loop {
        for url in &others {
            let Ok(mut client) = ClusterClient::connect((*url).clone()).await else {
                continue;
            };
            let Ok(response) = client.member_list(MemberListRequest::default()).await else {
                continue;
            };
            let response = response.into_inner();
            let cluster_id = response.header.map_or(0, |h| h.cluster_id);
            let me = response
                .members
                .iter()
                .find(|m| m.peer_ur_ls.contains(&config.advertise_peer_url));
            match me {
                Some(me) if cluster_id != 0 => {
                    tracing::info!(through = %url, "joining the cluster");
                    return Ok((
                        Identity {
                            member_id: me.id,
                            cluster_id,
                        },
                        response.members,
                    ));
                }
                _ => bail!(
                    "the cluster at {url} has no member with peer URL {}; add it first \
                     (`keel member add {} --peer-urls {}`)",
                    config.advertise_peer_url,
                    config.name,
                    config.advertise_peer_url
                ),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no member of initial_cluster answered within {JOIN_PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Records this member's name and URLs in the replicated member list once a
/// leader exists (and again whenever they changed since the last start).
async fn publish(backend: Arc<Backend>, config: Config) {
    let id = backend.identity.member_id;
    loop {
        if !backend.node.status().running {
            return;
        }
        let record = backend.store.members().into_iter().find(|m| m.id == id);
        let wanted = Member {
            id,
            name: config.name.clone(),
            peer_ur_ls: vec![config.advertise_peer_url.clone()],
            client_ur_ls: config.advertise_client_urls.clone(),
            is_learner: record.as_ref().is_some_and(|r| r.is_learner),
        };
        if record.as_ref() == Some(&wanted) {
            return;
        }
        let command = CommandPb {
            op: Some(Op::SetMember(wanted)),
        };
        match backend.write(command).await {
            Ok(_) => {
                tracing::info!("published this member's name and URLs");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "publishing this member: will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The gRPC health status follows whether a leader is known.
async fn report_health(backend: Arc<Backend>, health: tonic_health::server::HealthReporter) {
    let mut watch = backend.node.watch();
    loop {
        let (serving, running) = {
            let status = watch.borrow_and_update();
            (status.leader.is_some() && status.running, status.running)
        };
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        if !running || watch.changed().await.is_err() {
            return;
        }
    }
}
