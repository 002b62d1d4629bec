//! Plain HTTP/1.0 requests to a member's client port (the JSON gateway
//! and the admin API), read to the end of the connection.

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Sends one HTTP/1.0 request (so the answer ends with the connection)
/// and opens the answer: its status and the stream of its body.
pub(crate) async fn send(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, BufReader<TcpStream>) {
    send_with(addr, method, path, &[], body).await
}

/// [`send`] with extra headers.
pub(crate) async fn send_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.expect("status");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    (status, reader)
}

/// One request and its whole answer: the status and the body as JSON.
pub(crate) async fn call(addr: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    call_with(addr, method, path, &[], body).await
}

/// [`call`] with extra headers.
pub(crate) async fn call_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let (status, mut reader) =
        send_with(addr, method, path, headers, body.to_string().as_bytes()).await;
    let mut text = String::new();
    reader.read_to_string(&mut text).await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}"));
    (status, value)
}

/// A successful POST's answer.
pub(crate) async fn post(addr: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call(addr, "POST", path, body).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

pub(crate) fn b64(s: &str) -> String {
    use std::fmt::Write;
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.write_char(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char)
                    .unwrap();
            } else {
                out.push('=');
            }
        }
    }
    out
}
