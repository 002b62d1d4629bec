//! A user-space fault proxy for one TCP link (the kernel here has no
//! netem): clients connect to the proxy, which connects to the target and
//! copies bytes both ways, while a test cuts, slows or resets the link on
//! command. A cut direction holds its bytes until the link heals (what a
//! partition does to a TCP stream); a reset closes every connection and
//! refuses new ones (what a crashed or unreachable peer looks like).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// One proxied link; dropping it stops the proxy and its connections.
pub struct Proxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any) and passes connections on to
    /// `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (faults, watching) = watch::channel(Faults::healthy());
        let task = tokio::spawn(accept(listener, target, watching));
        Ok(Proxy { addr, faults, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what the link does, for its connections now and later.
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// What the link does now.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, faults: watch::Receiver<Faults>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if faults.borrow().reset {
            drop(client);
            continue;
        }
        let faults = faults.clone();
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let to_target = pump(client_read, server_write, faults.clone(), |f| {
                f.cut_to_target
            });
            let from_target = pump(server_read, client_write, faults, |f| f.cut_from_target);
            // Either direction ending (or a reset) ends the connection.
            tokio::select! {
                _ = to_target => {}
                _ = from_target => {}
            }
        });
        // Reap the finished ones so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}

/// Copies `from` into `to` as `faults` allow, until either side closes or
/// the link is reset.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut faults: watch::Receiver<Faults>,
    cut: fn(&Faults) -> bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = faults.wait_for(|f| f.reset) => {
                let _ = changed;
                return;
            }
        };
        let now = *faults.borrow();
        if cut(&now) {
            // Held until the link heals (or resets).
            let healed = faults.wait_for(|f| !cut(f) || f.reset).await;
            if healed.map_or(true, |f| f.reset) {
                return;
            }
        }
        let delay = faults.borrow().delay;
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
        proxy.set(Faults::healthy());
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut again, short).await.as_deref(),
            Some(&b"ping"[..])
        );
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
