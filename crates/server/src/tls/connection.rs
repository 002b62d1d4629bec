//! An accepted connection, plain or TLS, and what each request on it
//! learns of it: the peer's address and, for a client certificate the
//! port's trusted CA verified, its Common Name ([`ClientCommonName`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::ClientCommonName;

/// What the server knows of a connection: tonic puts it in each request's
/// extensions, [`ConnectionInfoLayer`] spreads it out.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionInfo {
    tcp: TcpConnectInfo,
    common_name: Option<ClientCommonName>,
}

/// An accepted connection, through TLS or not.
pub(crate) struct Connection {
    io: Io,
    info: ConnectionInfo,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection {
    /// A plaintext connection.
    pub(crate) fn plain(tcp: TcpStream) -> Self {
        Connection {
            info: ConnectionInfo {
                tcp: tcp.connect_info(),
                common_name: None,
            },
            io: Io::Plain(tcp),
        }
    }

    /// A connection whose TLS handshake is done, with the Common Name of
    /// the client's certificate if it presented one (a client certificate
    /// is only taken when the port's trusted CA verified it).
    pub(crate) fn tls(stream: TlsStream<TcpStream>) -> Self {
        let (tcp, session) = stream.get_ref();
        let common_name = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| ClientCommonName::of(leaf));
        Connection {
            info: ConnectionInfo {
                tcp: tcp.connect_info(),
                common_name,
            },
            io: Io::Tls(Box::new(stream)),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// A tower layer for a server fed [`Connection`]s: puts the connection's
/// [`TcpConnectInfo`] (so tonic's `Request::remote_addr` works) and
/// [`ClientCommonName`] into each request's extensions.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConnectionInfoLayer;

impl<S> tower::Layer<S> for ConnectionInfoLayer {
    type Service = WithConnectionInfo<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithConnectionInfo(inner)
    }
}

/// The service of [`ConnectionInfoLayer`].
#[derive(Clone, Debug)]
pub(crate) struct WithConnectionInfo<S>(S);

impl<S, B> tower::Service<http::Request<B>> for WithConnectionInfo<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let extensions = request.extensions_mut();
        if let Some(info) = extensions.get::<ConnectionInfo>() {
            let (tcp, common_name) = (info.tcp.clone(), info.common_name.clone());
            extensions.insert(tcp);
            if let Some(name) = common_name {
                extensions.insert(name);
            }
        }
        self.0.call(request)
    }
}
