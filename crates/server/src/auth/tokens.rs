//! Auth tokens: a user name and an expiry, signed with HMAC-SHA256 under
//! the cluster's token key (replicated, and new each time auth is
//! enabled, so enabling again voids every earlier token). Any member can
//! check a token any member issued; a token of a deleted user, an expired
//! one, and one signed under another key are refused alike.
//!
//! The form is `<payload>.<signature>`, both base64url: the payload is a
//! version byte, the expiry (Unix seconds, big-endian), 8 random bytes and
//! the user name.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::{RngCore, SeedableRng};
use sha2::Sha256;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8;

type Signer = Hmac<Sha256>;

fn signer(key: &[u8]) -> Option<Signer> {
    Signer::new_from_slice(key).ok()
}

/// Issues a token for `user`, valid until `expires` (Unix seconds); `None`
/// if `key` is empty (auth was never enabled).
pub(crate) fn issue(key: &[u8], user: &str, expires: u64) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut payload = Vec::with_capacity(HEADER + user.len());
    payload.push(VERSION);
    payload.extend_from_slice(&expires.to_be_bytes());
    let mut nonce = [0u8; 8];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut nonce);
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(user.as_bytes());
    let mut mac = signer(key)?;
    mac.update(&payload);
    let signature = mac.finalize().into_bytes();
    Some(format!(
        "{}.{}",
        B64.encode(&payload),
        B64.encode(signature)
    ))
}

/// The user a token names, if it is well formed, signed under `key`
/// (checked in constant time) and not expired at `now` (Unix seconds).
pub(crate) fn verify(key: &[u8], token: &str, now: u64) -> Option<String> {
    let (payload, signature) = token.split_once('.')?;
    let payload = B64.decode(payload).ok()?;
    let signature = B64.decode(signature).ok()?;
    let mut mac = signer(key)?;
    mac.update(&payload);
    mac.verify_slice(&signature).ok()?;
    if payload.len() < HEADER || payload[0] != VERSION {
        return None;
    }
    let expires = u64::from_be_bytes(payload[1..9].try_into().ok()?);
    if now > expires {
        return None;
    }
    String::from_utf8(payload[HEADER..].to_vec()).ok()
}

/// A fresh token key.
pub(crate) fn new_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut key);
    key
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_names_its_user_until_it_expires() {
        let token = issue(KEY, "alice", 1000).unwrap();
        assert_eq!(verify(KEY, &token, 999).as_deref(), Some("alice"));
        assert_eq!(verify(KEY, &token, 1000).as_deref(), Some("alice"));
        assert_eq!(verify(KEY, &token, 1001), None);
        assert_ne!(issue(KEY, "alice", 1000).unwrap(), token, "each is new");
    }

    #[test]
    fn forged_altered_and_malformed_tokens_are_refused() {
        let token = issue(KEY, "alice", 1000).unwrap();
        assert_eq!(
            verify(b"another key, another enable......", &token, 0),
            None
        );
        let (payload, signature) = token.split_once('.').unwrap();
        let mut raw = B64.decode(payload).unwrap();
        let last = raw.len() - 1;
        raw[last] = b'b'; // "alicb"
        let altered = format!("{}.{signature}", B64.encode(&raw));
        assert_eq!(verify(KEY, &altered, 0), None);
        for nonsense in ["", ".", "abc", "a.b", "!!!.???", &"x".repeat(100_000)] {
            assert_eq!(verify(KEY, nonsense, 0), None, "{nonsense:.20}");
        }
        assert_eq!(issue(b"", "alice", 1000), None);
    }
}
