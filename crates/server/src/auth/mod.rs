//! Who a request comes from, and the secrets that say so: the [`Caller`]
//! every client request carries, signed [`tokens`] that name a user, and
//! the [`limiter`] of failed logins. The rules themselves (who may touch
//! which keys) are keel-mvcc's, replicated with the users and roles.

pub(crate) mod limiter;
pub(crate) mod tokens;

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The server itself (bookkeeping, background tasks): never checked.
    Member,
    /// A client, as the user its token (or certificate) names; an empty
    /// name when it named none.
    Client(String),
}

impl Caller {
    /// The caller a request carries (put there by admission), or an
    /// anonymous client.
    pub(crate) fn of(extensions: &http::Extensions) -> Caller {
        extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Client(String::new()))
    }
}
