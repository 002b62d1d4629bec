//! `keel serve`: opens the store, finds out who this member is (bootstrap,
//! join or restart), starts the raft node, serves peers and clients, and
//! shuts down in order on a signal.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::{Member, MemberListRequest};
use keel_mvcc::{Store, StoreOptions};
use keel_node::{NodeConfig, NodeId, RaftNode, RaftService};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server as GrpcServer;
use tonic_health::ServingStatus;

use crate::api::coalesced_writes::CoalescedWrites;
use crate::api::grpc::admission::AdmissionLayer;
use crate::api::grpc::authority::LenientAuthority;
use crate::api::grpc::handled::HandledLayer;
use crate::api::grpc::{
    AuthService, ClusterService, ElectionService, ForwardService, KvService, LeaseService,
    LockService, MaintenanceService, WatchService,
};
use crate::api::http::{self, Gateway, StatusClients};
use crate::cluster::{Peers, RecordedAddresses};
use crate::config::{host_port, ClusterState, Config};
use crate::coordination::Coordinator;
use crate::core::{AuthSettings, Core, DiskSpace, Limits, MvccStateMachine};
use crate::identity::{self, Identity};
use crate::leases::{LeaseClock, Renewer};
use crate::tasks::{self, Tasks};
use crate::tls::{self, ConnectionInfoLayer, Dialer, PortTls};
use crate::watch::WatchHub;

/// How long a joining member keeps asking the cluster about itself.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);

/// Runs a member until `shutdown` resolves, then stops it cleanly: stop
/// accepting clients, let in-flight requests finish, stop the node (its
/// WAL is synced), close the peer port.
pub(crate) async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    crate::metrics::recorder();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir.join("kv"), StoreOptions::default())
        .context("opening the key-value store")?;
    // Certificates are read before anything listens: a missing or unusable
    // file stops the start with its name.
    let client_tls = PortTls::load(config.client_tls.as_ref())
        .context("client TLS (cert_file, key_file, trusted_ca_file)")?;
    let mut peer_tls = PortTls::load(config.peer_tls.as_ref())
        .context("peer TLS (peer_cert_file, peer_key_file, peer_trusted_ca_file)")?;
    // Members dial each other from their own peer address.
    peer_tls.dialer = peer_tls.dialer.dialing_from(&config.listen_peer);

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

    let (identity, initial_members, addresses) =
        establish_identity(&config, &store, &peer_tls.dialer).await?;
    tracing::info!(
        name = %config.name,
        member = %format!("{:x}", identity.member_id),
        cluster = %format!("{:x}", identity.cluster_id),
        peer = %config.advertise_peer_url,
        clients = ?config.advertise_client_urls,
        "starting"
    );

    let hub = Arc::new(WatchHub::new(
        store.clone(),
        identity.cluster_id,
        identity.member_id,
        config.max_watches_per_stream,
        config.max_request_bytes,
    ));
    let transport = peer_tls.dialer.raft_transport(identity.cluster_id);
    let peers = Peers::new(transport.clone(), peer_tls.dialer, addresses);
    peers.update(&store.members());
    let mut node_config = NodeConfig::new(identity.member_id, config.data_dir.join("raft"));
    node_config.initial_members = initial_members;
    node_config.tick_interval = config.heartbeat_interval;
    node_config.election_ticks = config.election_ticks;
    node_config.snapshot_threshold = config.snapshot_count;
    // Writes reach the leader through the server's own forwarder (which
    // checks them again there), and the write path retries by itself
    // until the request's deadline.
    node_config.forward_proposals = false;
    node_config.propose_retries = 0;
    let lease_clock = LeaseClock::default();
    let (renewer, renewals) = Renewer::new();
    let node = RaftNode::start(
        node_config,
        MvccStateMachine::new(
            store.clone(),
            peers.clone(),
            vec![hub.clone()],
            lease_clock.clone(),
        ),
        RecordedAddresses(transport),
    )
    .context("starting the raft node")?;
    hub.set_node_status(node.watch());
    let core = Arc::new(Core::new(
        node.clone(),
        store,
        identity,
        peers,
        Limits {
            max_request_bytes: config.max_request_bytes,
            max_txn_ops: config.max_txn_ops,
            quota_backend_bytes: config.quota_backend_bytes,
            request_timeout: config.request_timeout,
            disk: DiskSpace::new(&config.data_dir, config.min_free_disk_bytes),
        },
        (lease_clock, renewer, config.min_lease_ttl()),
        AuthSettings::new(config.auth_token_ttl, config.bcrypt_cost),
    ));

    let coordinator = Arc::new(Coordinator::new(core.clone(), hub.clone()));

    let (stop_peers, peers_stopped) = watch::channel(false);
    let peer_server = GrpcServer::builder()
        .layer(ConnectionInfoLayer)
        .layer(AdmissionLayer::new(core.clone()))
        .add_service(RaftService::new(identity.cluster_id, node.inbox()).into_server())
        .add_service(ClusterService::for_peers(core.clone()).into_server())
        .add_service(ForwardService(core.clone()).into_server())
        .serve_with_incoming_shutdown(
            tls::accept(
                TcpIncoming::from(peer_listener).with_nodelay(Some(true)),
                peer_tls.serving,
            ),
            signalled(peers_stopped),
        );
    let peer_server = tokio::spawn(peer_server);

    let (health, health_service) = tonic_health::server::health_reporter();
    let (stop_clients, clients_stopped) = watch::channel(false);
    let mut client_servers = Vec::new();
    let watch_service = || {
        WatchService::new(
            core.clone(),
            hub.clone(),
            node.watch(),
            config.election_timeout(),
            config.watch_stream_buffer_bytes,
        )
    };
    let scratch = config.data_dir.join("tmp");
    for listener in client_listeners {
        let grpc = Routes::builder()
            .add_service(KvService(core.clone()).into_server())
            .add_service(AuthService(core.clone()).into_server())
            .add_service(LeaseService(core.clone()).into_server())
            .add_service(LockService(coordinator.clone()).into_server())
            .add_service(ElectionService(coordinator.clone()).into_server())
            .add_service(watch_service().into_server())
            .add_service(ClusterService::for_clients(core.clone()).into_server())
            .add_service(MaintenanceService::new(core.clone(), scratch.clone()).into_server())
            .add_service(health_service.clone())
            .clone()
            .routes();
        let gateway = Gateway {
            core: core.clone(),
            kv: KvService(core.clone()),
            auth: AuthService(core.clone()),
            lease: LeaseService(core.clone()),
            cluster: ClusterService::for_clients(core.clone()),
            maintenance: MaintenanceService::new(core.clone(), scratch.clone()),
            lock: LockService(coordinator.clone()),
            election: ElectionService(coordinator.clone()),
            watch: watch_service(),
            hub: hub.clone(),
            status_clients: StatusClients::new(client_tls.dialer.clone()),
        };
        let routes = grpc
            .into_axum_router()
            .merge(http::router(gateway))
            .fallback(http::not_found);
        let server = GrpcServer::builder()
            .accept_http1(true)
            .layer(ConnectionInfoLayer)
            .layer(HandledLayer)
            .layer(AdmissionLayer::new(core.clone()))
            .add_routes(Routes::from(routes))
            .serve_with_incoming_shutdown(
                tls::accept(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    client_tls.serving.clone(),
                )
                .map(|accepted| {
                    accepted.map(|conn| CoalescedWrites::new(LenientAuthority::new(conn)))
                }),
                signalled(clients_stopped.clone()),
            );
        client_servers.push(tokio::spawn(server));
    }

    let mut background = Tasks::new();
    let status = node.watch();
    let s = status.clone();
    background.spawn("node metrics", |stop| {
        tasks::node_metrics::track_node(s, stop)
    });
    background.spawn("health", |stop| {
        tasks::health::report_health(status.clone(), health.clone(), stop)
    });
    let h = hub.clone();
    background.spawn("watch catch-up", |stop| h.catch_up(stop));
    let h = hub.clone();
    let every = config.watch_progress_notify_interval;
    background.spawn("watch progress", move |stop| {
        h.notify_progress_every(every, stop)
    });
    let store = core.store.clone();
    background.spawn("history removal", |stop| {
        tasks::history::remove_compacted_history(store, stop)
    });
    let (c, settings) = (core.clone(), config.clone());
    background.spawn("member record", |stop| {
        tasks::publish::publish_member(c, settings, stop)
    });
    let c = core.clone();
    background.spawn("peer round trips", |stop| {
        tasks::peer_rtt::probe_peers(c, stop)
    });
    let c = core.clone();
    background.spawn("lease renewals", |stop| renewals.run(c, stop));
    let c = core.clone();
    background.spawn("lease time", |stop| {
        tasks::lease_expiry::keep_lease_time(c, stop)
    });
    let c = core.clone();
    background.spawn_while_leader("lease expiry", status.clone(), move |stop| {
        tasks::lease_expiry::expire_leases(c.clone(), stop)
    });
    let c = core.clone();
    background.spawn_while_leader("promotion", status.clone(), move |stop| {
        tasks::promotion::promote_caught_up(c.clone(), stop)
    });
    if let Some(retention) = config.auto_compaction {
        let c = core.clone();
        background.spawn_while_leader("auto-compaction", status.clone(), move |stop| {
            tasks::auto_compaction::auto_compact(c.clone(), retention, stop)
        });
    }
    tracing::info!(clients = ?config.listen_client, peers = %config.listen_peer, "serving");

    // The node stops by itself only when it cannot go on (it could not
    // persist, say): then the member stops too, with an error, for its
    // supervisor to restart it, rather than serve without a raft node.
    let mut node_status = node.watch();
    let node_failed = tokio::select! {
        _ = shutdown => false,
        _ = node_status.wait_for(|s| !s.running) => true,
    };
    if node_failed {
        tracing::error!("the raft node stopped (see the error above); shutting the member down");
    }
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
    background.shutdown(grace).await;
    node.stop().await;
    let _ = stop_peers.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), peer_server).await;
    if node_failed {
        bail!("the raft node stopped on an error; the member cannot serve without it");
    }
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
    peer_dialer: &Dialer,
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
            let (identity, members) = join(config, peer_dialer).await?;
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

/// Asks the members listed in `initial_cluster` for the member list (as
/// committed: linearizably), and finds this member in it by its advertised
/// peer URL.
async fn join(config: &Config, peer_dialer: &Dialer) -> anyhow::Result<(Identity, Vec<Member>)> {
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
    // Why the last member asked did not answer (refused, a certificate it
    // did not accept, ...), for the error if none does.
    let mut last_failure = String::new();
    loop {
        for url in &others {
            let endpoint = peer_dialer.endpoint(&host_port(url)?)?;
            let answer = match endpoint.connect().await {
                // Linearizable: a member cut off from the others may
                // still list a removed member at this URL, under its old id.
                Ok(channel) => ClusterClient::new(channel)
                    .member_list(MemberListRequest { linearizable: true })
                    .await
                    .map_err(anyhow::Error::new),
                Err(e) => Err(anyhow::Error::new(e)),
            };
            let response = match answer {
                Ok(response) => response.into_inner(),
                Err(e) => {
                    last_failure = format!("{url}: {e:#}");
                    tracing::debug!(error = %last_failure, "cannot ask a member to join through");
                    continue;
                }
            };
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
            bail!(
                "no member of initial_cluster answered within {JOIN_PATIENCE:?} \
                 (the last failure: {last_failure})"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
