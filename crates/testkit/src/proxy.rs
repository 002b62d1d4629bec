//! A user-space fault proxy for one TCP link (the kernel here has no
//! netem): clients connect to the proxy, which connects to the target and
//! copies bytes both ways, while a test cuts, slows or resets the link on
//! command. A cut direction holds its bytes until the link heals (what a
//! partition does to a TCP stream); a reset closes every connection and
//! refuses new ones (what a crashed or unreachable peer looks like).
//! Faults can be set for the connections from one source address only,
//! so one proxy in front of a member can cut some of its peers and not
//! the others (each member on its own 127.0.0.N, dialing from it).
//!
//! A proxy started with [`Proxy::start_grpc`] also relays HTTP/2 stream
//! by stream (see `relay`), and can then lose or duplicate whole messages
//! of streaming gRPC calls.

mod relay;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the link does to its traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Bytes toward the target are held.
    pub cut_to_target: bool,
    /// Bytes from the target back to the client are held.
    pub cut_from_target: bool,
    /// Every chunk waits this long before it is passed on.
    pub delay: Duration,
    /// Every connection is closed, and new ones are refused.
    pub reset: bool,
    /// Percent of a streaming gRPC call's messages (after its first) that
    /// are lost ([`Proxy::start_grpc`] proxies only).
    pub lose_percent: u8,
    /// Percent of a streaming gRPC call's messages (after its first, and
    /// not lost) that are passed on twice ([`Proxy::start_grpc`] proxies
    /// only).
    pub duplicate_percent: u8,
}

impl Faults {
    /// Nothing wrong.
    pub fn healthy() -> Faults {
        Faults::default()
    }

    /// Both directions held.
    pub fn cut() -> Faults {
        Faults {
            cut_to_target: true,
            cut_from_target: true,
            ..Faults::default()
        }
    }
}

/// The faults of every source: its own, or the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Plan {
    default: Faults,
    by_source: BTreeMap<IpAddr, Faults>,
}

impl Plan {
    fn of(&self, source: IpAddr) -> Faults {
        self.by_source.get(&source).copied().unwrap_or(self.default)
    }
}

/// How a proxy passes a connection on.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Bytes as they come.
    Bytes,
    /// HTTP/2 stream by stream, with message faults; the seed drives
    /// which messages they hit.
    Grpc { seed: u64 },
}

/// How many messages a gRPC proxy's faults have lost and duplicated.
#[derive(Debug, Default)]
struct MessageTally {
    lost: AtomicU64,
    duplicated: AtomicU64,
}

/// One proxied link; dropping it stops the proxy and its connections.
pub struct Proxy {
    addr: SocketAddr,
    tally: Arc<MessageTally>,
    plan: watch::Sender<Plan>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any) and passes connections on to
    /// `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> io::Result<Proxy> {
        Proxy::start_in(listen, target, Mode::Bytes).await
    }

    /// Like [`Proxy::start`], for a link that speaks gRPC over cleartext
    /// HTTP/2: the proxy relays it stream by stream, so that
    /// [`Faults::lose_percent`] and [`Faults::duplicate_percent`] can act
    /// on whole messages; `seed` drives which ones.
    pub async fn start_grpc(
        listen: SocketAddr,
        target: SocketAddr,
        seed: u64,
    ) -> io::Result<Proxy> {
        Proxy::start_in(listen, target, Mode::Grpc { seed }).await
    }

    async fn start_in(listen: SocketAddr, target: SocketAddr, mode: Mode) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (plan, watching) = watch::channel(Plan::default());
        let tally = Arc::new(MessageTally::default());
        let task = tokio::spawn(accept(listener, target, watching, mode, tally.clone()));
        Ok(Proxy {
            addr,
            tally,
            plan,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what the link does, for its connections now and later (those
    /// of a source given its own faults excepted).
    pub fn set(&self, faults: Faults) {
        self.plan.send_modify(|plan| plan.default = faults);
    }

    /// Sets what the link does to the connections from `source`.
    pub fn set_from(&self, source: IpAddr, faults: Faults) {
        self.plan.send_modify(|plan| {
            plan.by_source.insert(source, faults);
        });
    }

    /// Heals the link for every source.
    pub fn heal(&self) {
        self.plan.send_replace(Plan::default());
    }

    /// How many streamed messages the link has lost and duplicated so far
    /// (always none for a proxy of bytes).
    pub fn messages_lost_and_duplicated(&self) -> (u64, u64) {
        (
            self.tally.lost.load(Ordering::Relaxed),
            self.tally.duplicated.load(Ordering::Relaxed),
        )
    }

    /// What the link does to connections from `source` now.
    pub fn faults(&self, source: IpAddr) -> Faults {
        self.plan.borrow().of(source)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    plan: watch::Receiver<Plan>,
    mode: Mode,
    tally: Arc<MessageTally>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let mut accepted = 0u64;
    loop {
        let Ok((client, from)) = listener.accept().await else {
            continue;
        };
        let source = from.ip();
        if plan.borrow().of(source).reset {
            drop(client);
            continue;
        }
        accepted += 1;
        let faults = plan.clone();
        let _ = client.set_nodelay(true);
        match mode {
            Mode::Bytes => {
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    copy_both_ways(client, server, faults, source).await;
                });
            }
            Mode::Grpc { seed } => {
                let tally = tally.clone();
                connections.spawn(async move {
                    // The byte-level faults sit between the client and the
                    // relay, which dials the target itself.
                    let (near, far) = tokio::io::duplex(256 * 1024);
                    let seed = seed ^ accepted.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    tokio::select! {
                        _ = copy_both_ways(client, near, faults.clone(), source) => {}
                        _ = relay::relay(far, target, faults, source, seed, tally) => {}
                    }
                });
            }
        }
        // Reap the finished ones so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}

/// Copies bytes between a client and a server as `plan` allows, until
/// either direction ends (or the link is reset).
async fn copy_both_ways(
    client: impl AsyncRead + AsyncWrite,
    server: impl AsyncRead + AsyncWrite,
    plan: watch::Receiver<Plan>,
    source: IpAddr,
) {
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    let to_target = pump(client_read, server_write, plan.clone(), source, |f| {
        f.cut_to_target
    });
    let from_target = pump(server_read, client_write, plan, source, |f| {
        f.cut_from_target
    });
    tokio::select! {
        _ = to_target => {}
        _ = from_target => {}
    }
}

/// Copies `from` into `to` as `faults` allow, until either side closes or
/// the link is reset.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut plan: watch::Receiver<Plan>,
    source: IpAddr,
    cut: fn(&Faults) -> bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = plan.wait_for(|p| p.of(source).reset) => {
                let _ = changed;
                return;
            }
        };
        if cut(&plan.borrow().of(source)) {
            // Held until the link heals (or resets).
            let healed = plan
                .wait_for(|p| !cut(&p.of(source)) || p.of(source).reset)
                .await;
            if healed.map_or(true, |p| p.of(source).reset) {
                return;
            }
        }
        let delay = plan.borrow().of(source).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(stream: &mut TcpStream, patience: Duration) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(patience, stream.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf.to_vec())
    }

    #[tokio::test]
    async fn a_cut_holds_bytes_until_the_link_heals_and_a_reset_refuses() {
        let target = echo_server().await;
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), target)
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let short = Duration::from_millis(200);
        assert_eq!(
            roundtrip(&mut stream, short).await.as_deref(),
            Some(&b"ping"[..])
        );
        // One way: the request gets through, the echo does not.
        proxy.set(Faults {
            cut_from_target: true,
            ..Faults::default()
        });
        assert_eq!(roundtrip(&mut stream, short).await, None);
        proxy.set(Faults::healthy());
        let mut held = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut held))
            .await
            .expect("released once healed")
            .unwrap();
        assert_eq!(&held, b"ping");
        proxy.set(Faults {
            reset: true,
            ..Faults::default()
        });
        assert_eq!(roundtrip(&mut stream, short).await, None, "closed");
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut fresh, short).await, None, "refused");
        proxy.heal();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut again, short).await.as_deref(),
            Some(&b"ping"[..])
        );
    }

    #[tokio::test]
    async fn faults_of_one_source_spare_the_others() {
        let target = echo_server().await;
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), target)
            .await
            .unwrap();
        let cut_off: IpAddr = "127.0.0.2".parse().unwrap();
        proxy.set_from(cut_off, Faults::cut());
        let short = Duration::from_millis(200);
        let mut spared = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut spared, short).await.is_some());
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(cut_off, 0)).unwrap();
        let mut from_cut = socket.connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut from_cut, short).await, None);
        assert_eq!(proxy.faults(cut_off), Faults::cut());
    }

    #[tokio::test]
    async fn a_delay_slows_each_chunk() {
        let target = echo_server().await;
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), target)
            .await
            .unwrap();
        proxy.set(Faults {
            delay: Duration::from_millis(100),
            ..Faults::default()
        });
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = std::time::Instant::now();
        assert!(roundtrip(&mut stream, Duration::from_secs(2))
            .await
            .is_some());
        assert!(started.elapsed() >= Duration::from_millis(200), "both ways");
    }
}
