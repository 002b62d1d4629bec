//! Accepting a port's connections, through TLS when it is configured.
//! Handshakes run beside the accept loop, each with a deadline: a client
//! that sends garbage, speaks plaintext, stalls or presents a certificate
//! the port does not trust loses its own connection (logged at debug) and
//! nothing else.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;

use super::connection::Connection;
use super::files::TlsFiles;
use super::reload::Reloading;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handed over but not yet taken by the server.
const BACKLOG: usize = 64;

/// A port's TLS settings, reloaded when their files change.
pub(crate) type ServerTls = Arc<Reloading<Arc<ServerConfig>>>;

/// Serving settings from `files`; a file that cannot be used is an error
/// now.
pub(crate) fn server_tls(files: &TlsFiles) -> anyhow::Result<ServerTls> {
    Ok(Arc::new(Reloading::new(
        files.clone(),
        TlsFiles::server_config,
    )?))
}

/// The connections accepted from `incoming`: plain, or through TLS with
/// `tls`. The stream ends, and the listener closes, once the server drops
/// it.
pub(crate) fn accept(
    incoming: TcpIncoming,
    tls: Option<ServerTls>,
) -> impl Stream<Item = io::Result<Connection>> + Send + 'static {
    let (connections, accepted) = mpsc::channel(BACKLOG);
    tokio::spawn(accept_loop(incoming, tls, connections));
    ReceiverStream::new(accepted)
}

async fn accept_loop(
    mut incoming: TcpIncoming,
    tls: Option<ServerTls>,
    connections: mpsc::Sender<io::Result<Connection>>,
) {
    loop {
        let tcp = tokio::select! {
            _ = connections.closed() => return,
            tcp = incoming.next() => match tcp {
                Some(Ok(tcp)) => tcp,
                // The server goes on after a failed accept (tonic's own
                // loop logs and continues).
                Some(Err(e)) => {
                    if connections.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
                None => return,
            },
        };
        let Some(tls) = &tls else {
            if connections.send(Ok(Connection::plain(tcp))).await.is_err() {
                return;
            }
            continue;
        };
        let (tls, connections) = (tls.clone(), connections.clone());
        tokio::spawn(async move {
            let remote = tcp.peer_addr().ok();
            match handshake(tcp, &tls).await {
                Ok(connection) => {
                    let _ = connections.send(Ok(connection)).await;
                }
                Err(e) => {
                    tracing::debug!(?remote, error = %e, "TLS handshake failed; connection dropped")
                }
            }
        });
    }
}

async fn handshake(tcp: TcpStream, tls: &ServerTls) -> io::Result<Connection> {
    let (_, config) = tls.current();
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Connection::tls(stream))
}
