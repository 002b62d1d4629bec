//! Lenient HTTP/2 `:authority` handling for Keel's client port.
//!
//! etcdctl 3.4 (and other etcd v3.4 Go clients) dial endpoints written as
//! `http://127.0.0.1:2379` and, for per-endpoint calls (`endpoint status`,
//! `endpoint hashkv`, `defrag`), send that string verbatim as the HTTP/2
//! `:authority` pseudo-header. Go's HTTP/2 server (etcd) ignores it, but the
//! Rust `h2` crate parses `:authority` as an `http::uri::Authority` and resets
//! the stream with `PROTOCOL_ERROR` before any application code runs
//! (hyperium/h2#525, no opt-out).
//!
//! [`LenientAuthority`] wraps an accepted connection *below* h2 and rewrites such
//! values to `host[:port]` on the read side. Design:
//!
//! * The first bytes are compared with the HTTP/2 client preface. Anything else
//!   (HTTP/1.1, e.g. the JSON gateway) switches the wrapper to a pure
//!   pass-through with no per-byte work.
//! * After the preface, frames are tracked by their 9-byte headers. Payloads of
//!   frames other than HEADERS/CONTINUATION are left in the caller's buffer
//!   (read in place, never copied or buffered by the wrapper).
//! * HEADERS + CONTINUATION frames are gathered into one header block and
//!   HPACK-decoded with this module's decoder, which tracks the *client's*
//!   dynamic table for the whole connection. Every block is then re-encoded
//!   with literal representations that never touch h2's dynamic table
//!   ("literal without indexing" / "never indexed", static-table name indexes,
//!   no Huffman), so h2's decoder state never depends on the client's table.
//!   `:authority` values containing `://` lose the scheme and any path.
//!   The block is re-emitted as one HEADERS frame (same stream id and
//!   END_STREAM flag, padding and priority dropped) plus CONTINUATION frames
//!   when it exceeds 16,384 bytes.
//! * Malformed input never panics: any framing or HPACK error makes `poll_read`
//!   return [`io::ErrorKind::InvalidData`] (forever after), so the server closes
//!   the connection. Memory is bounded by [`MAX_HEADER_BLOCK_LEN`],
//!   [`MAX_DECODED_HEADER_LIST_SIZE`] and one read's worth of carried bytes.
//!
//! Why not an HPACK crate's decoder: `loona-hpack` 0.4.3 (the maintained fork
//! of `hpack`/`fluke-hpack`) builds a `HashMap`-based Huffman table for *every*
//! Huffman-coded string (Go Huffman-codes nearly every literal) and allocates
//! every header: measured ~30 us per steady-state gRPC request block versus
//! ~0.2 us here (measured when it was written: 145–240 ns for a steady-state
//! 8-header gRPC block, 0.3 µs per request through the whole wrapper). `httlib-hpack` 0.1.3 indexes past
//! the end of truncated input (panics; found by reading its source). The
//! decoder here is small, allocation-free in steady state, and is checked
//! against `loona-hpack` in the tests (differential test, Huffman table
//! cross-check, static table cross-check).
//!
//! Coupling with the h2 server settings: the client's dynamic table may be
//! at most [`HEADER_TABLE_SIZE`] (h2's default `SETTINGS_HEADER_TABLE_SIZE`),
//! and emitted frames are at most [`OUT_MAX_FRAME_LEN`] (h2/hyper's default
//! `SETTINGS_MAX_FRAME_SIZE`); if Keel ever changes either setting, change the
//! constants too. With TLS, wrap the decrypted stream (inside the TLS layer).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use hpack::HpackDecoder;

mod hpack;
#[cfg(test)]
mod tests;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest HEADERS/CONTINUATION frame payload accepted from the client:
/// h2's default `SETTINGS_MAX_FRAME_SIZE` (16,384) plus 256 bytes of slack.
/// Larger header frames are an error (h2 would reject them anyway).
pub(crate) const MAX_HEADER_FRAME_LEN: usize = 16_384 + 256;

/// Largest frame payload the wrapper emits: h2's default
/// `SETTINGS_MAX_FRAME_SIZE` (Keel does not raise it).
pub(crate) const OUT_MAX_FRAME_LEN: usize = 16_384;

/// Cap on one compressed header block (HEADERS + all its CONTINUATIONs):
/// 1 MiB. A larger block is a connection error.
pub(crate) const MAX_HEADER_BLOCK_LEN: usize = 1 << 20;

/// Cap on the decoded size of one header list, counted as in RFC 9113 §6.5.2
/// (name + value + 32 per field): 1 MiB. This bounds the re-encoded output
/// (indexed fields can expand a small block a lot). It is far above hyper's
/// default `max_header_list_size` (16 KiB), so ordinary oversized requests are
/// still refused by h2 per stream, not by this wrapper per connection.
pub(crate) const MAX_DECODED_HEADER_LIST_SIZE: usize = 1 << 20;

/// The dynamic table size the client's HPACK encoder may use: the server's
/// `SETTINGS_HEADER_TABLE_SIZE`. h2 advertises the default, 4096. Must be
/// raised together with h2's setting if Keel ever changes it.
pub(crate) const HEADER_TABLE_SIZE: usize = 4096;

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Static-table index of `:authority` (RFC 7541 Appendix A).
const STATIC_AUTHORITY: u8 = 1;

/// Wraps an accepted connection; bytes the client sends pass through unchanged
/// except that an HTTP/2 request's `:authority` of the form
/// `scheme://host[:port][/...]` is rewritten to `host[:port]`.
///
/// Header blocks are re-encoded without HPACK indexing (see the module docs);
/// the write side is a pure pass-through.
pub(crate) struct LenientAuthority<IO> {
    io: IO,
    state: State,
}

enum State {
    /// Matched this many bytes of [`PREFACE`] so far.
    Preface(usize),
    /// Not HTTP/2 (or nothing to do): forward reads untouched.
    Passthrough,
    /// HTTP/2 after the preface.
    H2(Box<Rewriter>),
    /// A previous read failed; keep failing.
    Failed(&'static str),
}

impl<IO> LenientAuthority<IO> {
    /// Wraps `io`, an accepted server-side connection.
    pub(crate) fn new(io: IO) -> Self {
        LenientAuthority {
            io,
            state: State::Preface(0),
        }
    }

    /// Returns a reference to the wrapped connection.
    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("lenient-authority: {msg}"),
    )
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for LenientAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let State::Passthrough = this.state {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        // Bytes put into `buf` by this call; once there are some, never
        // return `Pending` (they would be lost).
        let call_start = buf.filled().len();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Passthrough => {
                    if buf.filled().len() > call_start {
                        return Poll::Ready(Ok(()));
                    }
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
                State::Failed(msg) => return Poll::Ready(Err(invalid(msg))),
                State::Preface(matched) => {
                    let m = *matched;
                    let start = buf.filled().len();
                    match Pin::new(&mut this.io).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {}
                        other => return other,
                    }
                    let end = buf.filled().len();
                    if end == start {
                        return Poll::Ready(Ok(())); // EOF
                    }
                    let k = (PREFACE.len() - m).min(end - start);
                    if buf.filled()[start..start + k] != PREFACE[m..m + k] {
                        this.state = State::Passthrough;
                        return Poll::Ready(Ok(()));
                    }
                    if m + k < PREFACE.len() {
                        *matched = m + k;
                        return Poll::Ready(Ok(()));
                    }
                    let mut rw = Box::new(Rewriter::new());
                    let res = rw.scan_in_place(buf, start + k);
                    this.state = State::H2(rw);
                    if let Err(msg) = res {
                        this.state = State::Failed(msg);
                        return Poll::Ready(Err(invalid(msg)));
                    }
                    // The preface is in `buf`; go on with anything withheld.
                }
                State::H2(rw) => {
                    // 1. Output produced by the rewriter goes first.
                    if rw.out_pos < rw.out.len() {
                        let n = buf.remaining().min(rw.out.len() - rw.out_pos);
                        buf.put_slice(&rw.out[rw.out_pos..rw.out_pos + n]);
                        rw.out_pos += n;
                        if rw.out_pos == rw.out.len() {
                            clear_and_trim(&mut rw.out);
                            rw.out_pos = 0;
                        }
                        continue;
                    }
                    // 2. Then bytes read earlier but not yet scanned.
                    if rw.carry_pos < rw.carry.len() {
                        let carry = std::mem::take(&mut rw.carry);
                        let pos = rw.carry_pos;
                        let lim = (carry.len() - pos).min(buf.remaining());
                        match rw.scan(&carry[pos..pos + lim]) {
                            Ok(Step::Pass(n)) => {
                                buf.put_slice(&carry[pos..pos + n]);
                                rw.carry_pos += n;
                            }
                            Ok(Step::Consume(n)) => rw.carry_pos += n,
                            Err(msg) => {
                                this.state = State::Failed(msg);
                                return Poll::Ready(Err(invalid(msg)));
                            }
                        }
                        rw.carry = carry;
                        if rw.carry_pos == rw.carry.len() {
                            clear_and_trim(&mut rw.carry);
                            rw.carry_pos = 0;
                        }
                        continue;
                    }
                    // 3. Nothing withheld: return what we have, or read new
                    //    bytes straight into the caller's buffer and scan
                    //    them there.
                    let start = buf.filled().len();
                    if start > call_start {
                        return Poll::Ready(Ok(()));
                    }
                    match Pin::new(&mut this.io).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {}
                        other => return other,
                    }
                    if buf.filled().len() == start {
                        return Poll::Ready(Ok(())); // EOF; h2 reports truncation
                    }
                    if let Err(msg) = rw.scan_in_place(buf, start) {
                        this.state = State::Failed(msg);
                        return Poll::Ready(Err(invalid(msg)));
                    }
                    // Loop: forward any output/carry after the passed bytes,
                    // or read again if everything was withheld.
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LenientAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What [`Rewriter::scan`] did with the front of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The first `n` (>= 1) bytes pass through unchanged.
    Pass(usize),
    /// The first `n` (>= 1) bytes were taken into the rewriter's state; any
    /// bytes to forward in their place are in `out`.
    Consume(usize),
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Reading a frame header; `have` bytes of it are in `stash`.
    /// `in_block`: a header block is open and a CONTINUATION must follow.
    Header {
        stash: [u8; FRAME_HEADER_LEN],
        have: usize,
        in_block: bool,
    },
    /// Inside the payload of a frame that passes through.
    Payload { remaining: usize },
    /// Inside the payload of a HEADERS/CONTINUATION frame (gathered).
    Block { remaining: usize },
}

const NEXT_HEADER: Frame = Frame::Header {
    stash: [0; FRAME_HEADER_LEN],
    have: 0,
    in_block: false,
};

const NEXT_CONTINUATION: Frame = Frame::Header {
    stash: [0; FRAME_HEADER_LEN],
    have: 0,
    in_block: true,
};

/// HTTP/2 read-side state: frame tracking, header-block gathering, HPACK.
struct Rewriter {
    frame: Frame,
    /// Bytes to hand to the reader before anything else.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes read from the connection but not scanned yet (at most one read).
    carry: Vec<u8>,
    carry_pos: usize,
    /// Compressed header block being gathered.
    block: Vec<u8>,
    block_stream: u32,
    block_end_stream: bool,
    /// Type and flags of the header frame currently being gathered.
    cur_is_headers: bool,
    cur_flags: u8,
    hpack: HpackDecoder,
}

impl Rewriter {
    fn new() -> Self {
        Rewriter {
            frame: NEXT_HEADER,
            out: Vec::new(),
            out_pos: 0,
            carry: Vec::new(),
            carry_pos: 0,
            block: Vec::new(),
            block_stream: 0,
            block_end_stream: false,
            cur_is_headers: false,
            cur_flags: 0,
            hpack: HpackDecoder::new(),
        }
    }

    /// Scans `buf.filled()[from..]` (bytes just read, and nothing pending in
    /// `out` or `carry`). Bytes that pass stay in place; from the first byte
    /// that is withheld on, the rest moves to `carry` and `buf` is truncated.
    fn scan_in_place(&mut self, buf: &mut ReadBuf<'_>, from: usize) -> Result<(), &'static str> {
        let end = buf.filled().len();
        let mut p = from;
        while p < end {
            match self.scan(&buf.filled()[p..end])? {
                Step::Pass(n) => p += n,
                Step::Consume(n) => {
                    self.carry.extend_from_slice(&buf.filled()[p + n..end]);
                    self.carry_pos = 0;
                    buf.set_filled(p);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Advances the frame state over the front of `data` (non-empty).
    fn scan(&mut self, data: &[u8]) -> Result<Step, &'static str> {
        debug_assert!(!data.is_empty());
        match self.frame {
            Frame::Payload { remaining } => {
                let n = remaining.min(data.len());
                self.frame = if n == remaining {
                    NEXT_HEADER
                } else {
                    Frame::Payload {
                        remaining: remaining - n,
                    }
                };
                Ok(Step::Pass(n))
            }
            Frame::Block { remaining } => {
                let n = remaining.min(data.len());
                self.block.extend_from_slice(&data[..n]);
                if n == remaining {
                    self.finish_frame()?;
                } else {
                    self.frame = Frame::Block {
                        remaining: remaining - n,
                    };
                }
                Ok(Step::Consume(n))
            }
            Frame::Header {
                mut stash,
                have,
                in_block,
            } => {
                if have == 0 && data.len() >= FRAME_HEADER_LEN {
                    let mut hdr = [0u8; FRAME_HEADER_LEN];
                    hdr.copy_from_slice(&data[..FRAME_HEADER_LEN]);
                    let ty = hdr[3];
                    if !in_block && ty != TYPE_HEADERS && ty != TYPE_CONTINUATION {
                        let len = frame_len(&hdr);
                        self.frame = if len == 0 {
                            NEXT_HEADER
                        } else {
                            Frame::Payload { remaining: len }
                        };
                        return Ok(Step::Pass(FRAME_HEADER_LEN));
                    }
                    self.start_header_frame(&hdr, in_block)?;
                    return Ok(Step::Consume(FRAME_HEADER_LEN));
                }
                let n = (FRAME_HEADER_LEN - have).min(data.len());
                stash[have..have + n].copy_from_slice(&data[..n]);
                if have + n < FRAME_HEADER_LEN {
                    self.frame = Frame::Header {
                        stash,
                        have: have + n,
                        in_block,
                    };
                    return Ok(Step::Consume(n));
                }
                let ty = stash[3];
                if !in_block && ty != TYPE_HEADERS && ty != TYPE_CONTINUATION {
                    // A pass-through frame whose header was split across
                    // reads: emit the 9 withheld bytes.
                    self.out.extend_from_slice(&stash);
                    let len = frame_len(&stash);
                    self.frame = if len == 0 {
                        NEXT_HEADER
                    } else {
                        Frame::Payload { remaining: len }
                    };
                } else {
                    self.start_header_frame(&stash, in_block)?;
                }
                Ok(Step::Consume(n))
            }
        }
    }

    fn start_header_frame(
        &mut self,
        hdr: &[u8; FRAME_HEADER_LEN],
        in_block: bool,
    ) -> Result<(), &'static str> {
        let len = frame_len(hdr);
        let ty = hdr[3];
        let flags = hdr[4];
        let stream = u32::from_be_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]) & 0x7fff_ffff;
        if in_block {
            if ty != TYPE_CONTINUATION || stream != self.block_stream {
                return Err("header block interrupted (expected CONTINUATION)");
            }
        } else if ty == TYPE_CONTINUATION {
            return Err("CONTINUATION without an open header block");
        } else {
            self.block.clear();
            self.block_stream = stream;
            self.block_end_stream = flags & FLAG_END_STREAM != 0;
        }
        if len > MAX_HEADER_FRAME_LEN {
            return Err("HEADERS/CONTINUATION frame too large");
        }
        if self.block.len() + len > MAX_HEADER_BLOCK_LEN {
            return Err("header block too large");
        }
        self.cur_is_headers = ty == TYPE_HEADERS;
        self.cur_flags = flags;
        if len == 0 {
            self.finish_frame()
        } else {
            self.frame = Frame::Block { remaining: len };
            Ok(())
        }
    }

    /// The current HEADERS/CONTINUATION frame's payload is in `block`.
    fn finish_frame(&mut self) -> Result<(), &'static str> {
        if self.cur_is_headers {
            // `block` holds exactly this frame's payload.
            let mut start = 0;
            let mut pad = 0;
            if self.cur_flags & FLAG_PADDED != 0 {
                pad = match self.block.first() {
                    Some(&p) => usize::from(p),
                    None => return Err("PADDED HEADERS frame without pad length"),
                };
                start = 1;
            }
            if self.cur_flags & FLAG_PRIORITY != 0 {
                start += 5;
            }
            if start + pad > self.block.len() {
                return Err("HEADERS padding/priority exceed frame");
            }
            self.block.truncate(self.block.len() - pad);
            if start > 0 {
                self.block.drain(..start);
            }
        }
        if self.cur_flags & FLAG_END_HEADERS != 0 {
            self.frame = NEXT_HEADER;
            self.finish_block()
        } else {
            self.frame = NEXT_CONTINUATION;
            Ok(())
        }
    }

    /// Decodes the gathered block and appends the re-encoded frames to `out`.
    fn finish_block(&mut self) -> Result<(), &'static str> {
        let base = self.out.len();
        self.out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        self.hpack.decode_block(&self.block, &mut self.out)?;
        clear_and_trim(&mut self.block);
        let len = self.out.len() - base - FRAME_HEADER_LEN;
        let end_stream = if self.block_end_stream {
            FLAG_END_STREAM
        } else {
            0
        };
        if len <= OUT_MAX_FRAME_LEN {
            write_frame_header(
                &mut self.out[base..base + FRAME_HEADER_LEN],
                len,
                TYPE_HEADERS,
                end_stream | FLAG_END_HEADERS,
                self.block_stream,
            );
            return Ok(());
        }
        // Rare: split into HEADERS + CONTINUATION frames.
        let payload = self.out.split_off(base + FRAME_HEADER_LEN);
        self.out.truncate(base);
        let mut chunks = payload.chunks(OUT_MAX_FRAME_LEN).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (ty, mut flags) = if first {
                (TYPE_HEADERS, end_stream)
            } else {
                (TYPE_CONTINUATION, 0)
            };
            if last {
                flags |= FLAG_END_HEADERS;
            }
            let at = self.out.len();
            self.out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
            write_frame_header(
                &mut self.out[at..at + FRAME_HEADER_LEN],
                chunk.len(),
                ty,
                flags,
                self.block_stream,
            );
            self.out.extend_from_slice(chunk);
            first = false;
        }
        Ok(())
    }
}

/// Buffers keep their capacity between uses, except after a huge header
/// block or read: then they shrink back to 32 KiB.
fn clear_and_trim(v: &mut Vec<u8>) {
    v.clear();
    if v.capacity() > 64 * 1024 {
        v.shrink_to(32 * 1024);
    }
}

fn frame_len(hdr: &[u8; FRAME_HEADER_LEN]) -> usize {
    (usize::from(hdr[0]) << 16) | (usize::from(hdr[1]) << 8) | usize::from(hdr[2])
}

fn write_frame_header(dst: &mut [u8], len: usize, ty: u8, flags: u8, stream: u32) {
    dst[0] = (len >> 16) as u8;
    dst[1] = (len >> 8) as u8;
    dst[2] = len as u8;
    dst[3] = ty;
    dst[4] = flags;
    dst[5..9].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// Strips `scheme://` and anything from the first `/`, `?` or `#` after it.
/// Returns `None` when `value` has no `://` (left as is).
fn lenient_authority(value: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    loop {
        at += value[at..].iter().position(|&c| c == b':')?;
        if value.get(at + 1) == Some(&b'/') && value.get(at + 2) == Some(&b'/') {
            break;
        }
        at += 1;
    }
    let rest = &value[at + 3..];
    let end = rest
        .iter()
        .position(|&c| c == b'/' || c == b'?' || c == b'#')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

impl<IO: Connected> Connected for LenientAuthority<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}
