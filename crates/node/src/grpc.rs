//! The gRPC transport: one long-lived client stream per peer carrying
//! batches of messages, reconnecting with backoff; and the service that
//! receives them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_raft::{Message, NodeId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{self, pb};
use crate::transport::{MessageSink, Transport};

/// Batches queued per peer while its stream (re)connects; more are dropped
/// (Raft retransmits).
const QUEUE: usize = 1024;
/// The largest batch accepted from a peer.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Sends messages to peers over gRPC.
#[derive(Clone)]
pub struct GrpcTransport {
    cluster_id: u64,
    addresses: Arc<Mutex<BTreeMap<NodeId, String>>>,
    streams: Arc<Mutex<BTreeMap<NodeId, mpsc::Sender<pb::MessageBatch>>>>,
    /// Peers already warned about for having no address.
    unknown: Arc<Mutex<std::collections::BTreeSet<NodeId>>>,
    /// This node's own address, sent with every batch.
    advertised: Arc<Mutex<String>>,
    /// How connections to peers are opened.
    dialer: Dialer,
}

/// How the transport opens a connection to a peer's `host:port`: plain
/// HTTP/2, or TLS with the configuration of the moment.
#[derive(Clone, Default)]
struct Dialer {
    /// Asked for the TLS settings at every connection; `None`: plaintext.
    #[cfg(feature = "tls")]
    tls: Option<Arc<dyn Fn() -> tonic::transport::ClientTlsConfig + Send + Sync>>,
    /// The local address connections start from (`None`: the system's
    /// choice).
    local: Option<std::net::IpAddr>,
}

impl Dialer {
    /// A channel to `address`, connected.
    async fn connect(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Endpoint::from_shared(format!("https://{address}"))?
                .local_address(self.local)
                .tls_config(tls())?
                .connect()
                .await;
        }
        Endpoint::from_shared(format!("http://{address}"))?
            .local_address(self.local)
            .connect()
            .await
    }
}

impl GrpcTransport {
    /// A transport for cluster `cluster_id` whose peers listen at `addresses`
    /// (`host:port`).
    pub fn new(cluster_id: u64, addresses: BTreeMap<NodeId, String>) -> Self {
        GrpcTransport {
            cluster_id,
            addresses: Arc::new(Mutex::new(addresses)),
            streams: Arc::default(),
            unknown: Arc::default(),
            advertised: Arc::default(),
            dialer: Dialer::default(),
        }
    }

    /// Connects to peers over TLS (`https`), with the settings `tls`
    /// returns. It is asked again at every connection and reconnection,
    /// so settings rebuilt from renewed certificate files apply from the
    /// next connection on; for fixed settings pass
    /// `move || config.clone()`.
    ///
    /// The peers' servers must speak TLS too: serve
    /// [`RaftService::into_server`] with tonic's
    /// `Server::builder().tls_config(ServerTlsConfig::new()...)`
    /// (add `.client_ca_root(ca)` to refuse peers whose certificate your CA
    /// did not sign) or behind your own TLS acceptor.
    ///
    /// ```no_run
    /// # fn tls(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) {
    /// use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    /// let config = ClientTlsConfig::new()
    ///     .ca_certificate(Certificate::from_pem(ca_pem))
    ///     .identity(Identity::from_pem(cert_pem, key_pem));
    /// let transport = keel_node::GrpcTransport::new(1, Default::default())
    ///     .with_tls(move || config.clone());
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn with_tls(
        mut self,
        tls: impl Fn() -> tonic::transport::ClientTlsConfig + Send + Sync + 'static,
    ) -> Self {
        self.dialer.tls = Some(Arc::new(tls));
        self
    }

    /// Opens connections to peers from local address `ip` (the one this
    /// node listens on, say), so that peers and anything between them see
    /// which node a connection comes from.
    pub fn bind_to(mut self, ip: std::net::IpAddr) -> Self {
        self.dialer.local = Some(ip);
        self
    }

    /// Sends `address` with every batch as where this node listens, so a
    /// peer that does not know it yet (having just joined) can answer.
    pub fn advertise(&self, address: impl Into<String>) {
        *self.advertised.lock().unwrap_or_else(|e| e.into_inner()) = address.into();
    }

    /// Adds or changes a peer's address (after a membership change).
    pub fn set_address(&self, id: NodeId, address: String) {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, address);
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn stream_to(&self, to: NodeId) -> Option<mpsc::Sender<pb::MessageBatch>> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = streams.get(&to).filter(|s| !s.is_closed()) {
            return Some(s.clone());
        }
        let address = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)?
            .clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(stream_to_peer(
            to,
            address,
            self.dialer.clone(),
            self.advertised.clone(),
            rx,
        ));
        streams.insert(to, tx.clone());
        Some(tx)
    }
}

impl Transport for GrpcTransport {
    fn learn_address(&self, id: NodeId, address: &str) {
        let known = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|a| a == address);
        if !known {
            self.set_address(id, address.to_string());
        }
    }

    fn send(&self, to: NodeId, messages: Vec<Message>) {
        let Some(stream) = self.stream_to(to) else {
            // Once per peer: heartbeats would repeat it every tick.
            if self
                .unknown
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(to)
            {
                tracing::warn!(to, "no address known for this peer; its messages are dropped until one is (add members with their address)");
            }
            return;
        };
        let batch = pb::MessageBatch {
            cluster_id: self.cluster_id,
            messages: messages.iter().map(codec::to_pb).collect(),
            // Set on a stream's first batch (see `stream_to_peer`).
            from_address: String::new(),
        };
        if stream.try_send(batch).is_err() {
            tracing::debug!(to, "peer stream is backed up; dropping a batch");
        }
    }
}

/// Keeps one stream open to `peer`, reconnecting with exponential backoff.
/// The first batch of each stream says where this node listens
/// (`advertised`), once: the peer learns it for the stream's life.
async fn stream_to_peer(
    peer: NodeId,
    address: String,
    dialer: Dialer,
    advertised: Arc<Mutex<String>>,
    mut batches: mpsc::Receiver<pb::MessageBatch>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match dialer.connect(&address).await {
            Ok(channel) => {
                backoff = Duration::from_millis(50);
                let mut client = pb::raft_transport_client::RaftTransportClient::new(channel)
                    .max_encoding_message_size(MAX_BATCH_BYTES);
                let (tx, rx) = mpsc::channel(QUEUE);
                let mut call = Box::pin(client.stream(ReceiverStream::new(rx)));
                let mut introduction =
                    Some(advertised.lock().unwrap_or_else(|e| e.into_inner()).clone());
                loop {
                    tokio::select! {
                        result = &mut call => {
                            if let Err(e) = result {
                                tracing::debug!(peer, error = %e, "peer stream ended");
                            }
                            break;
                        }
                        batch = batches.recv() => {
                            let Some(mut batch) = batch else { return };
                            if let Some(address) = introduction.take() {
                                batch.from_address = address;
                            }
                            if tx.send(batch).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                // The source says why (refused, a certificate the peer did
                // not accept, ...): tonic's own message is only "transport error".
                let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
                tracing::debug!(peer, %address, error = %why, "cannot connect to peer")
            }
        }
        // What queued up while disconnected is stale: Raft will resend.
        while batches.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        if batches.is_closed() {
            return;
        }
    }
}

/// Receives peers' streams and feeds the node's inbox.
pub struct RaftService {
    cluster_id: u64,
    inbox: MessageSink,
    /// Told the addresses senders advertise, if set.
    replies: Option<GrpcTransport>,
}

impl RaftService {
    /// A service for cluster `cluster_id` delivering into `inbox`.
    pub fn new(cluster_id: u64, inbox: MessageSink) -> Self {
        RaftService {
            cluster_id,
            inbox,
            replies: None,
        }
    }

    /// Tells `transport` (the node's own) the address each sender
    /// advertises, so that the node can answer peers it has no address
    /// for yet: a node that just joined learns the leader's this way
    /// before the membership tells it.
    pub fn answering_through(mut self, transport: GrpcTransport) -> Self {
        self.replies = Some(transport);
        self
    }

    /// The tonic service, ready to add to a server.
    pub fn into_server(self) -> pb::raft_transport_server::RaftTransportServer<RaftService> {
        pb::raft_transport_server::RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_BATCH_BYTES)
    }
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for RaftService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::MessageBatch>>,
    ) -> Result<Response<pb::StreamClosed>, Status> {
        let remote = request.remote_addr();
        let mut stream = request.into_inner();
        loop {
            let batch = tokio::select! {
                // A stopped node ends its peers' streams, so servers shut down promptly.
                _ = self.inbox.closed() => return Err(Status::unavailable("the node has stopped")),
                batch = stream.message() => match batch? {
                    Some(batch) => batch,
                    None => break,
                },
            };
            if batch.cluster_id != self.cluster_id {
                tracing::warn!(
                    ?remote,
                    theirs = batch.cluster_id,
                    ours = self.cluster_id,
                    "refusing a peer of another cluster"
                );
                return Err(Status::permission_denied(format!(
                    "this node belongs to cluster {}, not {}",
                    self.cluster_id, batch.cluster_id
                )));
            }
            if let (Some(transport), Some(first)) = (&self.replies, batch.messages.first()) {
                if !batch.from_address.is_empty() {
                    transport.learn_address(first.from, &batch.from_address);
                }
            }
            let mut messages = Vec::with_capacity(batch.messages.len());
            for m in batch.messages {
                match codec::from_pb(m) {
                    Ok(m) => messages.push(m),
                    Err(e) => {
                        tracing::warn!(?remote, error = %e, "dropping a malformed peer message")
                    }
                }
            }
            if self.inbox.send(messages).is_err() {
                return Err(Status::unavailable("the node has stopped"));
            }
        }
        Ok(Response::new(pb::StreamClosed {}))
    }
}

/// Serves the Raft transport on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: RaftService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // Small messages (votes, acks, heartbeats) must not wait for Nagle.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
