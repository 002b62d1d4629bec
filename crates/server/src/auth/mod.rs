//! Who a request comes from, and the secrets that say so: the [`Caller`]
//! every client request carries, signed [`tokens`] that name a user, and
//! the [`limiter`] of failed logins. The rules themselves (who may touch
//! which keys) are keel-mvcc's, replicated with the users and roles.

use crate::tls::ClientCommonName;

pub(crate) mod limiter;
pub(crate) mod tokens;

/// The metadata keys (and HTTP headers) an auth token comes in; etcd reads
/// both.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The server itself (bookkeeping, background tasks, or an admin API
    /// request already checked): never checked again.
    Member,
    /// A client, with the token it sent, if any, and the Common Name of
    /// its verified certificate (on a port with client certificate auth).
    /// The token is checked when the request is (against the rules in
    /// force then, as etcd does for a linearizable read: after its read
    /// index); without one, the Common Name is the user, as in etcd.
    Client {
        /// The token, as sent.
        token: Option<String>,
        /// The certificate's Common Name.
        common_name: Option<String>,
    },
}

impl Caller {
    /// The caller a request carries (put there by admission), or an
    /// anonymous client.
    pub(crate) fn of(extensions: &http::Extensions) -> Caller {
        extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Client {
                token: None,
                common_name: None,
            })
    }

    /// The client whose token (if any) is in `headers`, on a connection
    /// whose certificate names `common_name` (if any).
    pub(crate) fn client(
        headers: &http::HeaderMap,
        common_name: Option<&ClientCommonName>,
    ) -> Caller {
        let token = TOKEN_KEYS
            .iter()
            .find_map(|key| headers.get(*key))
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        Caller::Client {
            token,
            common_name: common_name.map(|cn| cn.0.clone()),
        }
    }

    /// Whether this is a client that names no user.
    pub(crate) fn is_anonymous(&self) -> bool {
        matches!(
            self,
            Caller::Client {
                token: None,
                common_name: None
            }
        )
    }
}

/// The client an HTTP request comes from (the gateway's handlers take it
/// as an argument).
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Caller, Self::Rejection> {
        Ok(Caller::client(
            &parts.headers,
            parts.extensions.get::<ClientCommonName>(),
        ))
    }
}
