//! Tests of [`LenientAuthority`](super::LenientAuthority): real h2 servers
//! behind it, Go-style header blocks, bad input, and a differential check of
//! the HPACK decoder against the `loona-hpack` crate.

use super::hpack::*;
use super::*;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

// ----- client-side helpers (Go-like HPACK encoder, frames) -----

fn huffman_encode(s: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut n = 0u32;
    for &b in s {
        let (c, l) = (
            u64::from(HUFF_CODES[b as usize]),
            u32::from(HUFF_LENS[b as usize]),
        );
        acc = (acc << l) | c;
        n += l;
        while n >= 8 {
            n -= 8;
            out.push((acc >> n) as u8);
        }
    }
    if n > 0 {
        out.push(((acc << (8 - n)) | ((1 << (8 - n)) - 1)) as u8);
    }
}

/// Go's rule: Huffman when it is shorter.
fn enc_str(out: &mut Vec<u8>, s: &[u8]) {
    let mut h = Vec::new();
    huffman_encode(s, &mut h);
    if h.len() < s.len() {
        encode_int(out, 0x80, 7, h.len());
        out.extend_from_slice(&h);
    } else {
        encode_int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

/// An HPACK encoder behaving like Go's `hpack.Encoder`: full matches are
/// indexed, everything else is a literal with incremental indexing (name
/// indexed when known), Huffman when shorter.
struct GoEncoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    pending_update: Option<usize>,
}

impl GoEncoder {
    fn new() -> Self {
        GoEncoder {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
            pending_update: None,
        }
    }

    fn set_max(&mut self, m: usize) {
        self.max = m;
        self.evict(m);
        self.pending_update = Some(m);
    }

    fn evict(&mut self, limit: usize) {
        while self.size > limit {
            let (n, v) = self.table.pop_back().unwrap();
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn encode(&mut self, hs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(m) = self.pending_update.take() {
            encode_int(&mut out, 0x20, 5, m);
        }
        for &(n, v) in hs {
            let (n, v) = (n.as_bytes(), v.as_bytes());
            let mut full = None;
            let mut name_idx = 0;
            for (i, (sn, sv)) in STATIC_TABLE.iter().enumerate() {
                if sn.as_bytes() == n {
                    if name_idx == 0 {
                        name_idx = i + 1;
                    }
                    if sv.as_bytes() == v {
                        full = Some(i + 1);
                        break;
                    }
                }
            }
            if full.is_none() {
                for (i, (dn, dv)) in self.table.iter().enumerate() {
                    if dn == n {
                        if name_idx == 0 {
                            name_idx = 62 + i;
                        }
                        if dv == v {
                            full = Some(62 + i);
                            break;
                        }
                    }
                }
            }
            if let Some(i) = full {
                encode_int(&mut out, 0x80, 7, i);
                continue;
            }
            encode_int(&mut out, 0x40, 6, name_idx);
            if name_idx == 0 {
                enc_str(&mut out, n);
            }
            enc_str(&mut out, v);
            let esize = n.len() + v.len() + 32;
            if esize > self.max {
                self.evict(0);
            } else {
                self.evict(self.max - esize);
                self.size += esize;
                self.table.push_front((n.to_vec(), v.to_vec()));
            }
        }
        out
    }
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0; FRAME_HEADER_LEN];
    write_frame_header(&mut f, payload.len(), ty, flags, stream);
    f.extend_from_slice(payload);
    f
}

/// Preface + empty SETTINGS.
fn client_start() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(frame(4, 0, 0, &[]));
    v
}

const EH_ES: u8 = FLAG_END_HEADERS | FLAG_END_STREAM;

fn grpc_request<'a>(
    authority: &'a str,
    path: &'a str,
    timeout: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.26.0"),
        ("te", "trailers"),
        ("grpc-timeout", timeout),
    ]
}

// ----- h2 server harness -----

#[derive(Debug, Clone)]
struct Seen {
    authority: Option<String>,
    path: String,
    headers: Vec<(String, String)>,
}

/// Limits every read to one byte.
struct OneByte<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for OneByte<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut one = [0u8; 1];
        let mut rb = ReadBuf::new(&mut one);
        match Pin::new(&mut self.get_mut().0).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                buf.put_slice(rb.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OneByte<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

async fn serve<T: AsyncRead + AsyncWrite + Unpin>(io: T) -> Vec<Seen> {
    let mut seen = Vec::new();
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return seen;
    };
    while let Some(res) = conn.accept().await {
        let Ok((req, mut respond)) = res else { break };
        let mut headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        seen.push(Seen {
            authority: req.uri().authority().map(|a| a.to_string()),
            path: req.uri().path().to_string(),
            headers,
        });
        let _ = respond.send_response(http::Response::new(()), true);
    }
    seen
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Response HEADERS on a stream.
    Response(u32),
    /// RST_STREAM (stream, error code).
    Reset(u32, u32),
    /// GOAWAY (error code).
    GoAway(u32),
}

/// Writes `bytes` (in `chunk`-sized writes) and reads server frames until
/// `expect` streams got a response or reset, GOAWAY, or EOF.
async fn client(mut io: DuplexStream, bytes: Vec<u8>, chunk: usize, expect: usize) -> Vec<Event> {
    for c in bytes.chunks(chunk) {
        io.write_all(c).await.unwrap();
    }
    let mut events = Vec::new();
    let mut done = 0;
    while done < expect {
        let mut hdr = [0u8; 9];
        if io.read_exact(&mut hdr).await.is_err() {
            break;
        }
        let mut payload = vec![0; frame_len(&hdr)];
        if io.read_exact(&mut payload).await.is_err() {
            break;
        }
        let stream = u32::from_be_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]);
        match hdr[3] {
            1 => {
                events.push(Event::Response(stream));
                done += 1;
            }
            3 => {
                let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                events.push(Event::Reset(stream, code));
                done += 1;
            }
            7 => {
                let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                events.push(Event::GoAway(code));
                break;
            }
            _ => {}
        }
    }
    events
}

/// Runs `bytes` from a raw client against an h2 server (wrapped or not).
async fn run(
    wrap: bool,
    bytes: Vec<u8>,
    write_chunk: usize,
    one_byte_reads: bool,
    expect: usize,
) -> (Vec<Seen>, Vec<Event>) {
    let (c, s) = tokio::io::duplex(1 << 20);
    let server = async move {
        match (wrap, one_byte_reads) {
            (true, false) => serve(LenientAuthority::new(s)).await,
            (true, true) => serve(LenientAuthority::new(OneByte(s))).await,
            (false, false) => serve(s).await,
            (false, true) => serve(OneByte(s)).await,
        }
    };
    let both = async { tokio::join!(server, client(c, bytes, write_chunk, expect)) };
    tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .expect("exchange timed out")
}

// ----- wrapper-level helpers -----

/// In-memory connection returning at most `chunk` bytes per read.
struct Mock {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl AsyncRead for Mock {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let m = self.get_mut();
        let n = m.chunk.min(m.data.len() - m.pos).min(buf.remaining());
        buf.put_slice(&m.data[m.pos..m.pos + n]);
        m.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Mock {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads everything through the wrapper: `chunk` bytes per underlying
/// read, caller buffers of `caller` bytes.
fn read_all(data: &[u8], chunk: usize, caller: usize) -> io::Result<Vec<u8>> {
    let mut w = LenientAuthority::new(Mock {
        data: data.to_vec(),
        pos: 0,
        chunk,
    });
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut out = Vec::new();
    let mut tmp = vec![0u8; caller];
    loop {
        let mut rb = ReadBuf::new(&mut tmp);
        match Pin::new(&mut w).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                if rb.filled().is_empty() {
                    return Ok(out);
                }
                out.extend_from_slice(rb.filled());
            }
            Poll::Ready(Err(e)) => {
                // Errors are sticky.
                let mut rb = ReadBuf::new(&mut tmp);
                let again = Pin::new(&mut w).poll_read(&mut cx, &mut rb);
                assert!(matches!(again, Poll::Ready(Err(_))));
                return Err(e);
            }
            Poll::Pending => panic!("mock never blocks"),
        }
    }
}

/// Splits wrapper output (after the preface) into frames; decodes every
/// header block with `loona-hpack` (a fresh, independent decoder).
/// (type, flags, stream id, payload) of one frame.
type RawFrame = (u8, u8, u32, Vec<u8>);
type HeaderList = Vec<(String, String)>;

fn parse_output(out: &[u8]) -> (Vec<RawFrame>, Vec<HeaderList>) {
    assert!(out.starts_with(PREFACE));
    let mut p = PREFACE.len();
    let mut frames = Vec::new();
    let mut lists = Vec::new();
    let mut dec = loona_hpack::Decoder::new();
    let mut block = Vec::new();
    while p < out.len() {
        let hdr: [u8; 9] = out[p..p + 9].try_into().unwrap();
        let len = frame_len(&hdr);
        let payload = out[p + 9..p + 9 + len].to_vec();
        p += 9 + len;
        let stream = u32::from_be_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]);
        if hdr[3] == TYPE_HEADERS || hdr[3] == TYPE_CONTINUATION {
            assert!(len <= OUT_MAX_FRAME_LEN);
            block.extend_from_slice(&payload);
            if hdr[4] & FLAG_END_HEADERS != 0 {
                let list = dec.decode(&block).expect("re-encoded block decodes");
                lists.push(
                    list.into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect(),
                );
                block.clear();
            }
        }
        frames.push((hdr[3], hdr[4], stream, payload));
    }
    (frames, lists)
}

fn owned(hs: &[(&str, &str)]) -> Vec<(String, String)> {
    hs.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ----- 1. the etcdctl case through h2 -----

#[tokio::test]
async fn scheme_in_authority_is_accepted_by_h2() {
    let mut enc = GoEncoder::new();
    let block = enc.encode(&grpc_request(
        "http://127.0.0.1:2379",
        "/etcdserverpb.Maintenance/Status",
        "4999980u",
    ));
    // Huffman and incremental indexing, as Go sends it.
    assert_eq!(block[0], 0x83); // :method POST, indexed
    assert!(block.iter().any(|&b| b & 0xc0 == 0x40));
    let mut bytes = client_start();
    bytes.extend(frame(TYPE_HEADERS, EH_ES, 1, &block));

    let (seen, events) = run(true, bytes.clone(), usize::MAX, false, 1).await;
    assert_eq!(events, vec![Event::Response(1)]);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authority.as_deref(), Some("127.0.0.1:2379"));
    assert_eq!(seen[0].path, "/etcdserverpb.Maintenance/Status");
    assert!(seen[0]
        .headers
        .contains(&("grpc-timeout".into(), "4999980u".into())));

    // The same bytes without the wrapper: h2 resets the stream.
    let (seen, events) = run(false, bytes, usize::MAX, false, 1).await;
    assert!(seen.is_empty());
    assert_eq!(events, vec![Event::Reset(1, 1)]); // PROTOCOL_ERROR
}

// ----- 2. dynamic table across requests (and evictions) -----

fn many_requests(table_size: Option<usize>, n: u32) -> (Vec<u8>, Vec<String>) {
    let mut enc = GoEncoder::new();
    let mut bytes = client_start();
    let mut paths = Vec::new();
    for i in 0..n {
        if i == 3 {
            if let Some(sz) = table_size {
                enc.set_max(sz);
            }
        }
        let path = format!("/etcdserverpb.KV/Range{}", i % 3);
        let timeout = format!("{}u", 4_999_000 + i * 7);
        let auth = if i % 4 == 3 {
            "127.0.0.1:2379"
        } else {
            "http://127.0.0.1:2379"
        };
        let mut hs = grpc_request(auth, &path, &timeout);
        let big = "x".repeat(100 + i as usize * 13);
        hs.push(("x-big", &big));
        let block = enc.encode(&hs);
        if i > 0 {
            // Later requests refer to dynamic-table entries.
            assert!(block.iter().any(|&b| b >= 0x80 + 62));
        }
        let stream = 1 + 2 * i;
        bytes.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
        bytes.extend(frame(0, FLAG_END_STREAM, stream, b"\0\0\0\0\x05hello"));
        paths.push(path);
    }
    (bytes, paths)
}

#[tokio::test]
async fn dynamic_table_references_across_requests() {
    for table_size in [None, Some(0), Some(256), Some(1000)] {
        let (bytes, paths) = many_requests(table_size, 20);
        let (seen, events) = run(true, bytes, usize::MAX, false, 20).await;
        assert_eq!(events.len(), 20, "{table_size:?}: {events:?}");
        assert!(events.iter().all(|e| matches!(e, Event::Response(_))));
        assert_eq!(seen.len(), 20);
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s.authority.as_deref(), Some("127.0.0.1:2379"));
            assert_eq!(s.path, paths[i]);
            let big = "x".repeat(100 + i * 13);
            assert!(s.headers.contains(&("x-big".into(), big)));
            let to = format!("{}u", 4_999_000 + i * 7);
            assert!(s.headers.contains(&("grpc-timeout".into(), to)));
        }
    }
}

// ----- 3. CONTINUATION, PADDED + PRIORITY -----

#[tokio::test]
async fn continuation_and_padded_priority_headers() {
    let mut enc = GoEncoder::new();
    let hs = grpc_request("https://127.0.0.1:2379/some/path", "/a/b", "1S");
    let block = enc.encode(&hs);
    let mut bytes = client_start();
    // Stream 1: HEADERS + 2 CONTINUATIONs.
    let (a, rest) = block.split_at(3);
    let (b, c) = rest.split_at(5);
    bytes.extend(frame(TYPE_HEADERS, FLAG_END_STREAM, 1, a));
    bytes.extend(frame(TYPE_CONTINUATION, 0, 1, b));
    bytes.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, c));
    // Stream 3: PADDED + PRIORITY, indexed references only.
    let block = enc.encode(&hs);
    let mut payload = vec![7u8]; // pad length
    payload.extend([0, 0, 0, 1, 200]); // dependency on stream 1, weight
    payload.extend(&block);
    payload.extend([0u8; 7]);
    bytes.extend(frame(
        TYPE_HEADERS,
        EH_ES | FLAG_PADDED | FLAG_PRIORITY,
        3,
        &payload,
    ));
    // Stream 5: PADDED only, with a CONTINUATION.
    let block = enc.encode(&hs);
    let mut payload = vec![3u8];
    payload.extend(&block[..2]);
    payload.extend([0u8; 3]);
    bytes.extend(frame(
        TYPE_HEADERS,
        FLAG_END_STREAM | FLAG_PADDED,
        5,
        &payload,
    ));
    bytes.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, &block[2..]));

    let (seen, events) = run(true, bytes.clone(), usize::MAX, false, 3).await;
    assert_eq!(
        events,
        vec![Event::Response(1), Event::Response(3), Event::Response(5)]
    );
    for s in &seen {
        assert_eq!(s.authority.as_deref(), Some("127.0.0.1:2379"));
        assert_eq!(s.path, "/a/b");
    }

    // Wrapper output: one HEADERS frame per block, flags kept/dropped.
    let out = read_all(&bytes, 4096, 4096).unwrap();
    let (frames, lists) = parse_output(&out);
    let hdrs: Vec<_> = frames.iter().filter(|f| f.0 == TYPE_HEADERS).collect();
    assert_eq!(hdrs.len(), 3);
    for h in &hdrs {
        assert_eq!(h.1, EH_ES);
    }
    assert!(frames.iter().all(|f| f.0 != TYPE_CONTINUATION));
    let mut want = owned(&hs);
    want[3].1 = "127.0.0.1:2379".into();
    assert_eq!(lists, vec![want.clone(), want.clone(), want]);
}

#[test]
fn big_block_is_split_into_continuations() {
    let mut enc = GoEncoder::new();
    let big = "v".repeat(3000);
    let mut hs = grpc_request("http://h:1", "/p", "1S");
    let names: Vec<String> = (0..12).map(|i| format!("x-h{i}")).collect();
    for n in &names {
        hs.push((n, &big));
    }
    let block = enc.encode(&hs);
    let mut bytes = client_start();
    let split = |stream: u32, end_stream: u8, block: &[u8], out: &mut Vec<u8>| {
        let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
        assert!(chunks.len() >= 2);
        for (i, c) in chunks.iter().enumerate() {
            let ty = if i == 0 {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            let mut flags = if i == 0 { end_stream } else { 0 };
            if i + 1 == chunks.len() {
                flags |= FLAG_END_HEADERS;
            }
            out.extend(frame(ty, flags, stream, c));
        }
    };
    split(1, 0, &block, &mut bytes);
    // ... and a second block referring to the same (now evicted) headers.
    let block2 = enc.encode(&hs);
    split(3, FLAG_END_STREAM, &block2, &mut bytes);
    let out = read_all(&bytes, 100_000, 100_000).unwrap();
    let (frames, lists) = parse_output(&out);
    let types: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert_eq!(types, vec![4, 1, 9, 9, 1, 9, 9]);
    assert_eq!(frames[1].1, 0); // no END_HEADERS, no END_STREAM
    assert_eq!(frames[3].1, FLAG_END_HEADERS);
    assert_eq!(frames[4].1, FLAG_END_STREAM);
    assert_eq!(frames[6].1, FLAG_END_HEADERS);
    let mut want = owned(&hs);
    want[3].1 = "h:1".into();
    assert_eq!(lists, vec![want.clone(), want]);
}

// ----- 4. HTTP/1.1 and non-header frames pass through -----

#[test]
fn http1_passes_through_unchanged() {
    let mut req = b"POST /v3/kv/range HTTP/1.1\r\nHost: http://127.0.0.1:2379\r\n\
                    Content-Length: 8\r\n\r\n{\"k\":1}\n"
        .to_vec();
    req.extend(frame(TYPE_HEADERS, EH_ES, 1, &[0x80, 0x80]));
    let mut almost = PREFACE[..10].to_vec();
    almost.extend(b"garbage\x00\x01");
    for data in [req, almost, b"P".to_vec(), Vec::new()] {
        for (chunk, caller) in [(1, 1), (1, 64), (3, 5), (64, 64), (10_000, 10_000)] {
            assert_eq!(read_all(&data, chunk, caller).unwrap(), data);
        }
    }
}

#[test]
fn non_header_frames_pass_through_unchanged() {
    let mut data = client_start();
    data.extend(frame(4, 1, 0, &[])); // SETTINGS ack
    data.extend(frame(8, 0, 0, &[0, 1, 0, 0])); // WINDOW_UPDATE
    data.extend(frame(6, 0, 0, b"12345678")); // PING
    data.extend(frame(0, 0, 1, &[0xab; 40_000][..16_384])); // DATA
    data.extend(frame(0, 1, 1, &[])); // empty DATA
    data.extend(frame(0x42, 0xff, 7, b"unknown frame type"));
    for (chunk, caller) in [
        (1, 1),
        (2, 3),
        (9, 9),
        (10, 8),
        (100, 1000),
        (1 << 20, 1 << 20),
    ] {
        assert_eq!(read_all(&data, chunk, caller).unwrap(), data);
    }
}

// ----- 5. malformed input: errors, never panics -----

fn expect_invalid(payload_frames: Vec<u8>) {
    let mut data = client_start();
    data.extend(payload_frames);
    for (chunk, caller) in [(1, 1), (7, 13), (1 << 20, 1 << 20)] {
        let err = read_all(&data, chunk, caller).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}

#[test]
fn corrupt_header_blocks_are_errors() {
    let hf = |block: &[u8]| frame(TYPE_HEADERS, EH_ES, 1, block);
    expect_invalid(hf(&[0x80])); // index 0
    expect_invalid(hf(&[0xff, 0x00])); // index 127, table empty
    expect_invalid(hf(&[0x40, 0x81, 0x00, 0x00])); // Huffman padding of zeros
    expect_invalid(hf(&[0x40, 0x81, 0xff, 0x00])); // 8 bits padding
    expect_invalid(hf(&[0x40, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00])); // EOS
    expect_invalid(hf(&[0x40, 0x05, b'a'])); // truncated string
    expect_invalid(hf(&[0x41])); // missing value
    expect_invalid(hf(&[0x3f, 0xe2, 0x1f])); // size update to 4097
    expect_invalid(hf(&[0x82, 0x20])); // size update after a field
    expect_invalid(hf(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01])); // huge int
    expect_invalid(hf(&[0xff, 0x80])); // truncated int
                                       // CONTINUATION without HEADERS.
    expect_invalid(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
    // Block interrupted by DATA / by another stream.
    let mut v = frame(TYPE_HEADERS, 0, 1, &[0x82]);
    v.extend(frame(0, 0, 1, b"x"));
    expect_invalid(v);
    let mut v = frame(TYPE_HEADERS, 0, 1, &[0x82]);
    v.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[0x82]));
    expect_invalid(v);
    // Oversized HEADERS frame.
    expect_invalid(frame(
        TYPE_HEADERS,
        EH_ES,
        1,
        &vec![0x82; MAX_HEADER_FRAME_LEN + 1],
    ));
    // Padding longer than the frame; PADDED without the length octet.
    expect_invalid(frame(TYPE_HEADERS, EH_ES | FLAG_PADDED, 1, &[5, 0x82]));
    expect_invalid(frame(TYPE_HEADERS, EH_ES | FLAG_PADDED, 1, &[]));
    expect_invalid(frame(TYPE_HEADERS, EH_ES | FLAG_PRIORITY, 1, &[0, 0, 0]));
    // Block over MAX_HEADER_BLOCK_LEN via CONTINUATIONs.
    let mut v = frame(TYPE_HEADERS, 0, 1, &[0x82; 16_384]);
    for _ in 0..(MAX_HEADER_BLOCK_LEN / 16_384) {
        v.extend(frame(TYPE_CONTINUATION, 0, 1, &[0x82; 16_384]));
    }
    expect_invalid(v);
    // Decoded list over MAX_DECODED_HEADER_LIST_SIZE: 4000-byte entry
    // referenced 300 times.
    let mut block = Vec::new();
    encode_int(&mut block, 0x40, 6, 0);
    encode_int(&mut block, 0, 7, 1);
    block.push(b'x');
    encode_int(&mut block, 0, 7, 4000);
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0xbe, 300)); // index 62
    expect_invalid(hf(&block));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let mut data = client_start();
        for _ in 0..rng.below(4) + 1 {
            match rng.below(3) {
                0 => {
                    // raw garbage
                    let n = rng.below(64);
                    data.extend((0..n).map(|_| rng.next() as u8));
                }
                _ => {
                    let n = rng.below(40);
                    let mut payload: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    if rng.below(2) == 0 {
                        // a valid-looking block, mutated
                        let mut enc = GoEncoder::new();
                        payload = enc.encode(&grpc_request("http://a:1", "/x", "1S"));
                        let at = rng.below(payload.len());
                        payload[at] = rng.next() as u8;
                        payload.truncate(rng.below(payload.len() + 1));
                    }
                    let ty = if rng.below(4) == 0 {
                        TYPE_CONTINUATION
                    } else {
                        TYPE_HEADERS
                    };
                    data.extend(frame(ty, rng.next() as u8, rng.below(4) as u32, &payload));
                }
            }
        }
        let chunk = 1 + rng.below(50);
        let caller = 1 + rng.below(50);
        let _ = read_all(&data, chunk, caller);
        if round % 2 == 0 {
            let _ = read_all(&data, 1 << 16, 1 << 16);
        }
    }
}

/// Our decoder against `loona-hpack` on near-valid blocks: whenever
/// loona decodes a block, ours yields the same list (authority fixed);
/// ours only rejects what RFC 7541 forbids and loona tolerates.
#[test]
fn differential_against_loona_hpack() {
    let mut rng = Rng(42);
    let mut ours = HpackDecoder::new();
    let mut theirs = loona_hpack::Decoder::new();
    theirs.set_max_allowed_table_size(HEADER_TABLE_SIZE);
    let mut check = loona_hpack::Decoder::new();
    let mut enc = GoEncoder::new();
    let mut agreed = 0;
    for i in 0..5000 {
        let n = 1 + rng.below(12);
        let vals: Vec<String> = (0..n)
            .map(|_| {
                let len = rng.below(40);
                (0..len)
                    .map(|_| (rng.below(95) as u8 + 32) as char)
                    .collect()
            })
            .collect();
        let names = [
            ":authority",
            ":path",
            "x-a",
            "x-b",
            "content-type",
            "te",
            "grpc-timeout",
        ];
        let hs: Vec<(&str, &str)> = vals
            .iter()
            .map(|v| (names[rng.below(names.len())], v.as_str()))
            .collect();
        if rng.below(50) == 0 {
            enc.set_max(rng.below(4097));
        }
        let mut block = enc.encode(&hs);
        let mutate = i % 3 == 0;
        if mutate {
            let at = rng.below(block.len());
            block[at] = rng.next() as u8;
        }
        let mut out = Vec::new();
        let r_ours = ours.decode_block(&block, &mut out);
        let r_theirs = theirs.decode(&block);
        match (&r_ours, r_theirs) {
            (Ok(()), Ok(list)) => {
                let got = check.decode(&out).unwrap();
                let want: Vec<(Vec<u8>, Vec<u8>)> = list
                    .into_iter()
                    .filter_map(|(n, v)| {
                        if n == b":authority" {
                            match lenient_authority(&v) {
                                Some([]) => None,
                                Some(f) => Some((n, f.to_vec())),
                                None => Some((n, v)),
                            }
                        } else {
                            Some((n, v))
                        }
                    })
                    .collect();
                assert_eq!(got, want, "block {i}");
                agreed += 1;
            }
            (Err(e), Ok(_)) => {
                assert!(mutate && e.contains("size update"), "block {i}: {e}");
            }
            (Ok(()), Err(e)) => {
                assert!(
                    mutate && e == loona_hpack::decoder::DecoderError::SizeUpdateAtEnd,
                    "block {i}: {e:?}"
                );
            }
            (Err(_), Err(_)) => {}
        }
        if !mutate {
            assert!(r_ours.is_ok(), "unmutated block {i}");
            // Same dynamic table as the client's encoder.
            assert_eq!(ours.size, enc.size, "block {i}");
            let table: Vec<(&[u8], &[u8])> = ours
                .table
                .iter()
                .map(|e| (&e.buf[..e.name_len], &e.buf[e.name_len..]))
                .collect();
            let want: Vec<(&[u8], &[u8])> =
                enc.table.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            assert_eq!(table, want, "block {i}");
        }
        if r_ours.is_err() || mutate {
            // States may have diverged: restart both sides.
            ours = HpackDecoder::new();
            theirs = loona_hpack::Decoder::new();
            theirs.set_max_allowed_table_size(HEADER_TABLE_SIZE);
            enc = GoEncoder::new();
        }
    }
    assert!(agreed > 3000, "{agreed}");
}

#[test]
fn huffman_matches_rfc_and_loona() {
    // RFC 7541 Appendix C.4 / C.6 vectors.
    let vectors: [(&str, &str); 6] = [
        ("www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
        ("no-cache", "a8eb10649cbf"),
        ("custom-key", "25a849e95ba97d7f"),
        ("custom-value", "25a849e95bb8e8b4bf"),
        ("private", "aec3771a4b"),
        (
            "https://www.example.com",
            "9d29ad171863c78f0b97c8e9ae82ae43d3",
        ),
    ];
    for (plain, hex) in vectors {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut enc = Vec::new();
        huffman_encode(plain.as_bytes(), &mut enc);
        assert_eq!(enc, bytes, "{plain}");
        let mut dec = Vec::new();
        huffman_decode(&bytes, &mut dec).unwrap();
        assert_eq!(dec, plain.as_bytes());
    }
    // Every symbol, alone and in runs, against loona's independent table.
    let mut loona = loona_hpack::huffman::HuffmanDecoder::new();
    let mut rng = Rng(7);
    for b in 0..=255u8 {
        let s: Vec<u8> = std::iter::repeat_n(b, 1 + (b as usize % 5)).collect();
        let mut enc = Vec::new();
        huffman_encode(&s, &mut enc);
        assert_eq!(loona.decode(&enc).unwrap(), s);
        let mut dec = Vec::new();
        huffman_decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, s);
    }
    for _ in 0..2000 {
        let s: Vec<u8> = (0..rng.below(30)).map(|_| rng.next() as u8).collect();
        let mut enc = Vec::new();
        huffman_encode(&s, &mut enc);
        let mut dec = Vec::new();
        huffman_decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, s);
        // Random bytes: same verdict and result as loona.
        let junk: Vec<u8> = (0..rng.below(12)).map(|_| rng.next() as u8).collect();
        let mut dec = Vec::new();
        let ours = huffman_decode(&junk, &mut dec).map(|_| dec);
        assert_eq!(ours.ok(), loona.decode(&junk).ok(), "{junk:?}");
    }
}

#[test]
fn static_table_matches_loona() {
    let mut block = Vec::new();
    for i in 1..=61 {
        encode_int(&mut block, 0x80, 7, i);
    }
    let theirs = loona_hpack::Decoder::new().decode(&block).unwrap();
    let ours: Vec<(Vec<u8>, Vec<u8>)> = STATIC_TABLE
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(theirs, ours);
}

#[test]
fn authority_fixups() {
    let f =
        |s: &str| lenient_authority(s.as_bytes()).map(|b| String::from_utf8(b.to_vec()).unwrap());
    assert_eq!(
        f("http://127.0.0.1:2379").as_deref(),
        Some("127.0.0.1:2379")
    );
    assert_eq!(f("https://[::1]:2379/x?y").as_deref(), Some("[::1]:2379"));
    assert_eq!(f("unix:///tmp/etcd.sock").as_deref(), Some(""));
    assert_eq!(f("localhost:2379"), None);
    assert_eq!(f(""), None);
    assert_eq!(f(":"), None);
    assert_eq!(f("a:/"), None);
    assert_eq!(f("a:/b://c:1/"), Some("c:1".into()));
    assert_eq!(f("://"), Some("".into()));
}

/// An independent HPACK encoder (the h2 crate's client: Huffman, dynamic
/// table, never-indexed for sensitive values) through the wrapper.
#[tokio::test]
async fn h2_client_interop() {
    let (c, s) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(serve(LenientAuthority::new(s)));
    let (mut client, conn) = h2::client::handshake(c).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut sent = Vec::new();
    for i in 0..40u32 {
        let mut sensitive = http::HeaderValue::from_str(&format!("secret-{}", i % 3)).unwrap();
        sensitive.set_sensitive(true);
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://keel.local:2379/svc/M{}", i % 5))
            .header("x-seq", i.to_string())
            .header("x-const", "same-every-time")
            .header("authorization", sensitive)
            .header("x-big", "b".repeat((i as usize * 97) % 3000))
            .body(())
            .unwrap();
        client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
        sent.push(i);
    }
    drop(client);
    driver.await.unwrap().unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 40);
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.authority.as_deref(), Some("keel.local:2379"));
        assert_eq!(s.path, format!("/svc/M{}", i % 5));
        let get = |n: &str| s.headers.iter().find(|h| h.0 == n).map(|h| h.1.clone());
        assert_eq!(get("x-seq"), Some(i.to_string()));
        assert_eq!(get("x-const").as_deref(), Some("same-every-time"));
        assert_eq!(get("authorization"), Some(format!("secret-{}", i % 3)));
        let big = "b".repeat((i * 97) % 3000);
        assert_eq!(get("x-big").unwrap_or_default(), big);
    }
}

// ----- 6. one byte at a time -----

#[tokio::test]
async fn one_byte_reads_give_same_result() {
    let (bytes, paths) = many_requests(Some(300), 8);
    let (seen, events) = run(true, bytes.clone(), 1, true, 8).await;
    assert_eq!(events.len(), 8);
    assert!(events.iter().all(|e| matches!(e, Event::Response(_))));
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.authority.as_deref(), Some("127.0.0.1:2379"));
        assert_eq!(s.path, paths[i]);
    }
    let whole = read_all(&bytes, 1 << 20, 1 << 20).unwrap();
    for (chunk, caller) in [(1, 1), (1, 100), (5, 3), (9, 9), (10, 17), (333, 64)] {
        assert_eq!(read_all(&bytes, chunk, caller).unwrap(), whole);
    }
    let (_, lists) = parse_output(&whole);
    assert_eq!(lists.len(), 8);
}
