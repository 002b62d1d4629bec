//! The proxy's HTTP/2 relay for gRPC links: it ends the client's HTTP/2
//! connection and opens its own to the target, stream for stream, so that
//! it can lose or duplicate whole gRPC messages of a streaming call (a
//! byte-level copy cannot: HTTP/2's framing, header compression and flow
//! control would break). Each side of the relay keeps its own flow
//! control, so a duplicated message costs the client no window and a lost
//! one is still credited back to it.
//!
//! Only a stream's second and later request messages are touched: a
//! unary call carries one, so only streaming calls (raft's message
//! stream) see message faults. Responses pass unchanged.

use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{MessageTally, Plan};

/// Each side's HTTP/2 windows, as large as a tonic server's.
const WINDOW: u32 = 1024 * 1024;

/// The largest gRPC message, prefix included, the relay holds whole before
/// passing it on: keel-node's largest message batch (64 MiB). A larger one
/// ends its stream.
const MAX_MESSAGE: usize = 64 * 1024 * 1024 + 5;

/// Relays one client connection (`client`, already past the byte-level
/// faults) to `target` until either side closes.
pub(super) async fn relay(
    client: impl AsyncRead + AsyncWrite + Unpin,
    target: SocketAddr,
    plan: watch::Receiver<Plan>,
    source: IpAddr,
    seed: u64,
    tally: Arc<MessageTally>,
) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let Ok((sender, connection)) = h2::client::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .handshake::<_, Bytes>(upstream)
        .await
    else {
        return;
    };
    let Ok(mut downstream) = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .handshake::<_, Bytes>(client)
        .await
    else {
        return;
    };
    let mut connection = std::pin::pin!(connection);
    let mut streams = JoinSet::new();
    let mut rng = Rng(seed);
    loop {
        tokio::select! {
            // The target's connection ended: so does the client's.
            _ = &mut connection => return,
            accepted = downstream.accept() => {
                let Some(Ok((request, respond))) = accepted else {
                    return;
                };
                let faults = MessageFaults {
                    plan: plan.clone(),
                    source,
                    rng: Rng(rng.next()),
                    tally: tally.clone(),
                };
                streams.spawn(relay_stream(sender.clone(), request, respond, faults));
            }
        }
        while streams.try_join_next().is_some() {}
    }
}

/// Relays one stream: the request (its messages through `faults`), then
/// the response back.
async fn relay_stream(
    sender: h2::client::SendRequest<Bytes>,
    request: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    faults: MessageFaults,
) {
    let (head, body) = request.into_parts();
    let grpc = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let end = body.is_end_stream();
    let sent = match sender.ready().await {
        Ok(mut sender) => sender.send_request(Request::from_parts(head, ()), end),
        Err(e) => Err(e),
    };
    let Ok((response, upstream)) = sent else {
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    };
    let request_side = async move {
        if end {
            return;
        }
        let mut upstream = upstream;
        let faults = grpc.then_some(faults);
        if copy_body(body, &mut upstream, faults).await.is_err() {
            upstream.send_reset(Reason::CANCEL);
        }
    };
    let response_side = async move {
        let response = match response.await {
            Ok(response) => response,
            Err(e) => {
                respond.send_reset(e.reason().unwrap_or(Reason::CANCEL));
                return;
            }
        };
        let (head, body) = response.into_parts();
        let end = body.is_end_stream();
        let Ok(mut downstream) = respond.send_response(Response::from_parts(head, ()), end) else {
            return;
        };
        if !end && copy_body(body, &mut downstream, None).await.is_err() {
            downstream.send_reset(Reason::CANCEL);
        }
    };
    tokio::join!(request_side, response_side);
}

/// Copies a body and its trailers, message faults applied when given.
/// What `from` received is credited back once it is passed on (or held
/// as part of a message), so the sender waits on `to`'s window.
async fn copy_body(
    mut from: RecvStream,
    to: &mut SendStream<Bytes>,
    mut faults: Option<MessageFaults>,
) -> Result<(), h2::Error> {
    let mut messages = Messages::default();
    while let Some(chunk) = from.data().await {
        let chunk = chunk?;
        let received = chunk.len();
        match &mut faults {
            None => send(to, chunk).await?,
            Some(faults) => {
                // What one received chunk completes leaves as one chunk:
                // the relay adds no frames for the target to count.
                messages.push(chunk).map_err(|()| Reason::INTERNAL_ERROR)?;
                let mut out = BytesMut::new();
                while let Some(message) = messages.next() {
                    for _ in 0..faults.copies(messages.seen) {
                        out.extend_from_slice(&message);
                    }
                }
                send(to, out.freeze()).await?;
            }
        }
        from.flow_control().release_capacity(received)?;
    }
    match from.trailers().await? {
        Some(trailers) => to.send_trailers(trailers),
        None => to.send_data(Bytes::new(), true),
    }
}

/// Sends `data` as `to`'s window allows.
async fn send(to: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        to.reserve_capacity(data.len());
        let granted = poll_fn(|cx| to.poll_capacity(cx))
            .await
            .ok_or(Reason::STREAM_CLOSED)??;
        if granted > 0 {
            to.send_data(data.split_to(granted.min(data.len())), false)?;
        }
    }
    Ok(())
}

/// What the link does to a streaming call's messages.
struct MessageFaults {
    plan: watch::Receiver<Plan>,
    source: IpAddr,
    rng: Rng,
    tally: Arc<MessageTally>,
}

impl MessageFaults {
    /// How many times the `nth` message of its stream (from 1) is passed
    /// on: 0 (lost), 1, or 2 (duplicated).
    fn copies(&mut self, nth: u64) -> usize {
        if nth < 2 {
            return 1;
        }
        let faults = self.plan.borrow().of(self.source);
        if self.rng.percent() < faults.lose_percent {
            self.tally.lost.fetch_add(1, Ordering::Relaxed);
            0
        } else if self.rng.percent() < faults.duplicate_percent {
            self.tally.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        }
    }
}

/// A gRPC body cut into its length-prefixed messages (a flag byte, a
/// 4-byte big-endian length, the message).
#[derive(Default)]
struct Messages {
    pending: BytesMut,
    /// Messages taken so far.
    seen: u64,
}

impl Messages {
    /// Adds received bytes; refuses a message over [`MAX_MESSAGE`].
    fn push(&mut self, chunk: Bytes) -> Result<(), ()> {
        self.pending.extend_from_slice(&chunk);
        match self.next_len() {
            Some(len) if len > MAX_MESSAGE => Err(()),
            _ => Ok(()),
        }
    }

    /// The length of the next message, prefix included, once its prefix
    /// is here.
    fn next_len(&self) -> Option<usize> {
        let prefix = self.pending.get(..5)?;
        let len = u32::from_be_bytes(prefix[1..5].try_into().expect("four bytes"));
        Some(5 + len as usize)
    }

    /// The next whole message, prefix included.
    fn next(&mut self) -> Option<Bytes> {
        let len = self.next_len()?;
        if self.pending.remaining() < len {
            return None;
        }
        self.seen += 1;
        Some(self.pending.split_to(len).freeze())
    }
}

/// splitmix64: the relay's dice, seeded per proxy and connection so a
/// proxy's choices do not depend on a global generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn percent(&mut self) -> u8 {
        (self.next() % 100) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn messages_are_cut_at_their_prefixes_across_chunks() {
        let mut wire = framed(b"one");
        wire.extend(framed(b""));
        wire.extend(framed(b"three"));
        let mut messages = Messages::default();
        let mut out = Vec::new();
        for chunk in wire.chunks(2) {
            messages.push(Bytes::copy_from_slice(chunk)).unwrap();
            while let Some(m) = messages.next() {
                out.push(m);
            }
        }
        assert_eq!(out, vec![framed(b"one"), framed(b""), framed(b"three")]);
        assert_eq!(messages.seen, 3);
        assert!(messages.pending.is_empty());
    }

    /// A target that answers each request with the number of gRPC
    /// messages its body held and their total size.
    async fn counting_target() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(socket).await.unwrap();
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        tokio::spawn(async move {
                            let mut body = request.into_body();
                            let mut messages = Messages::default();
                            let mut bytes = 0;
                            while let Some(chunk) = body.data().await {
                                let chunk = chunk.unwrap();
                                let _ = body.flow_control().release_capacity(chunk.len());
                                messages.push(chunk).unwrap();
                                while let Some(m) = messages.next() {
                                    bytes += m.len();
                                }
                            }
                            let mut out = respond.send_response(Response::new(()), false).unwrap();
                            let answer = format!("{} {bytes}", messages.seen);
                            out.send_data(Bytes::from(answer), true).unwrap();
                        });
                    }
                });
            }
        });
        addr
    }

    /// Sends `count` messages of `size` bytes on one gRPC stream through
    /// `proxy` and returns what the target counted (a stall fails).
    async fn stream_through(proxy: SocketAddr, count: usize, size: usize) -> String {
        let patience = std::time::Duration::from_secs(30);
        tokio::time::timeout(patience, stream_through_now(proxy, count, size))
            .await
            .expect("the stream stalled")
    }

    async fn stream_through_now(proxy: SocketAddr, count: usize, size: usize) -> String {
        let socket = TcpStream::connect(proxy).await.unwrap();
        let (sender, connection) = h2::client::handshake(socket).await.unwrap();
        tokio::spawn(connection);
        let request = Request::post(format!("http://{proxy}/test.Counter/Count"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(())
            .unwrap();
        let (response, mut upstream) = sender
            .ready()
            .await
            .unwrap()
            .send_request(request, false)
            .unwrap();
        // In large writes, as a gRPC client buffers them: messages
        // straddle frames.
        let mut body = Vec::new();
        for i in 0..count {
            body.extend(framed(&vec![i as u8; size]));
            if body.len() > 100_000 || i + 1 == count {
                send(&mut upstream, Bytes::from(std::mem::take(&mut body)))
                    .await
                    .unwrap();
            }
        }
        upstream.send_data(Bytes::new(), true).unwrap();
        let mut body = response.await.unwrap().into_body();
        let mut answer = Vec::new();
        while let Some(chunk) = body.data().await {
            answer.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn streamed_messages_are_lost_or_duplicated_whole_and_windows_keep_flowing() {
        let target = counting_target().await;
        let proxy = super::super::Proxy::start_grpc("127.0.0.1:0".parse().unwrap(), target, 7)
            .await
            .unwrap();
        let framed_size = 5 + 100;
        assert_eq!(
            stream_through(proxy.addr(), 10, 100).await,
            format!("10 {}", 10 * framed_size)
        );
        proxy.set(super::super::Faults {
            duplicate_percent: 100,
            ..Default::default()
        });
        // The first message passes once; a call of one message (unary) is
        // never touched.
        assert_eq!(
            stream_through(proxy.addr(), 10, 100).await,
            format!("19 {}", 19 * framed_size)
        );
        assert_eq!(
            stream_through(proxy.addr(), 1, 100).await,
            format!("1 {framed_size}")
        );
        // Far more than either side's window, every message twice: the
        // relay's flow control on each side keeps it moving.
        let size = 64 * 1024;
        assert_eq!(
            stream_through(proxy.addr(), 200, size).await,
            format!("399 {}", 399 * (5 + size))
        );
        proxy.set(super::super::Faults {
            lose_percent: 100,
            ..Default::default()
        });
        // Lost messages are credited back: the sender is not starved.
        assert_eq!(
            stream_through(proxy.addr(), 200, size).await,
            format!("1 {}", 5 + size)
        );
        proxy.set(super::super::Faults {
            lose_percent: 30,
            duplicate_percent: 30,
            ..Default::default()
        });
        let answer = stream_through(proxy.addr(), 1000, 10).await;
        let seen: usize = answer.split(' ').next().unwrap().parse().unwrap();
        assert!(seen != 1000 && (600..1400).contains(&seen), "{answer}");
        let (lost, duplicated) = proxy.messages_lost_and_duplicated();
        // 199 lost and 9 + 199 duplicated before this last stream.
        assert_eq!(
            seen as u64,
            1000 - (lost - 199) + (duplicated - 208),
            "{answer}"
        );
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_prefix() {
        let mut messages = Messages::default();
        let mut prefix = vec![0];
        prefix.extend_from_slice(&(MAX_MESSAGE as u32).to_be_bytes());
        assert_eq!(messages.push(Bytes::from(prefix)), Err(()));
    }
}
