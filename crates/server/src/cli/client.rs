//! The client subcommands: the common cases of etcdctl (which stays the
//! reference client), printed the way etcdctl prints them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use keel_api::etcdserverpb::auth_client::AuthClient;
use keel_api::etcdserverpb::*;
use keel_mvcc::prefix_end;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_api::etcdserverpb::watch_client::WatchClient;

use super::lease::{elect, lease_command, lock, LeaseCommand};

/// Where the client commands connect, and how (etcdctl's flags).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Connection {
    /// Client endpoints (`host:port`, `http://host:port` or
    /// `https://host:port`, comma-separated); the first that answers is
    /// used. Without a scheme: https when a TLS flag is given.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        env = "KEEL_ENDPOINTS"
    )]
    pub(super) endpoints: Vec<String>,
    /// Verify the server's certificate with this CA bundle (PEM) instead
    /// of the system's roots; implies TLS.
    #[arg(long, env = "KEEL_CACERT")]
    pub(super) cacert: Option<PathBuf>,
    /// Present this client certificate (PEM, with --key); implies TLS.
    #[arg(
        long = "cert",
        id = "tls_cert",
        env = "KEEL_CERT",
        requires = "tls_key"
    )]
    pub(super) cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long = "key", id = "tls_key", env = "KEEL_KEY", requires = "tls_cert")]
    pub(super) key: Option<PathBuf>,
    /// Authenticate as this user: `name:password`, or `name` with the
    /// password from --password (as etcdctl's --user).
    #[arg(long, env = "KEEL_USER")]
    pub(super) user: Option<String>,
    /// The password of --user, when it holds only the name.
    #[arg(long, env = "KEEL_PASSWORD")]
    pub(super) password: Option<String>,
}

/// A connection to a member: the channel, with the auth token (of --user)
/// on every request.
pub(crate) type Conn = InterceptedService<Channel, Token>;

/// The auth token a connection sends, if --user logged in.
#[derive(Clone)]
pub(crate) struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

impl Connection {
    /// Whether a TLS flag was given.
    fn wants_tls(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }

    /// The TLS settings of the flags: the CA bundle (or the system's
    /// roots), and the client certificate if given.
    fn tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let read = |path: &Path, flag: &str| {
            std::fs::read(path).with_context(|| format!("reading --{flag} {}", path.display()))
        };
        let config = match &self.cacert {
            Some(ca) => {
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "cacert")?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        Ok(match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config.identity(Identity::from_pem(read(cert, "cert")?, read(key, "key")?))
            }
            _ => config,
        })
    }
}

/// The client commands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum ClientCommand {
    /// Put a key.
    Put {
        #[command(flatten)]
        connection: Connection,
        key: String,
        value: String,
        /// Print the previous value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Get a key, a range [key, range_end), a prefix or every key from one.
    Get {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        keys: Keys,
        /// At most this many keys.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Read as of this revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Print the number of keys only.
        #[arg(long)]
        count_only: bool,
        /// Sort by key, version, create, modify or value.
        #[arg(long)]
        sort_by: Option<String>,
        /// ascend or descend.
        #[arg(long)]
        order: Option<String>,
        /// Serve from the local member without a ReadIndex round.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key, a range, a prefix or every key from one.
    Del {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        keys: Keys,
        /// Print the deleted key-values.
        #[arg(long)]
        prev_kv: bool,
    },
    /// A transaction: `--compare 'value(k) = v'` (value, version, create,
    /// mod, lease; =, !=, <, >), then `--success`/`--failure` operations
    /// `put k v`, `get k`, `del k`.
    Txn {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        compare: Vec<String>,
        #[arg(long)]
        success: Vec<String>,
        #[arg(long)]
        failure: Vec<String>,
    },
    /// Watch a key, a range, a prefix or every key from one, printing each
    /// change as etcdctl does (PUT/DELETE, the key, the value; with
    /// --prev-kv the previous key and value too), until interrupted.
    Watch {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        keys: Keys,
        /// Start at this revision (0: the next one).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print each change's previous key-value too.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Discard history below a revision.
    Compact {
        #[command(flatten)]
        connection: Connection,
        revision: i64,
    },
    /// Membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Take a lock, held by a lease kept alive meanwhile: print its key and
    /// hold it until interrupted, or run a command (after `--`) and release it.
    Lock {
        #[command(flatten)]
        connection: Connection,
        name: String,
        /// The lease's TTL in seconds.
        #[arg(long, default_value_t = 10)]
        ttl: i64,
        /// The command to run while holding the lock.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Stand for election `name` with a proposal and lead until interrupted,
    /// or (--listen) print every leader.
    Elect {
        #[command(flatten)]
        connection: Connection,
        name: String,
        proposal: Option<String>,
        /// Observe the leaders instead of standing.
        #[arg(short, long)]
        listen: bool,
        /// The lease's TTL in seconds.
        #[arg(long, default_value_t = 10)]
        ttl: i64,
    },
    /// The status of each endpoint.
    Status {
        #[command(flatten)]
        connection: Connection,
    },
}

/// The keys get, del and watch take: one key, `[key, range_end)`, a
/// prefix or every key from one.
#[derive(clap::Args, Debug)]
pub(crate) struct Keys {
    key: String,
    range_end: Option<String>,
    /// Every key with `key` as a prefix.
    #[arg(long)]
    prefix: bool,
    /// Every key from `key` on.
    #[arg(long)]
    from_key: bool,
}

impl Keys {
    /// The key and the range end, in etcd's forms.
    fn into_range(self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let key = self.key.into_bytes();
        let end = match (self.range_end, self.prefix, self.from_key) {
            (Some(end), false, false) => end.into_bytes(),
            (None, true, false) => prefix_end(&key).to_vec(),
            (None, false, true) => vec![0],
            (None, false, false) => Vec::new(),
            _ => bail!("give at most one of a range end, --prefix and --from-key"),
        };
        Ok((key, end))
    }
}

/// Membership commands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum MemberCommand {
    /// List the members.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Add a member (then start it with `--initial-cluster-state existing`).
    Add {
        #[command(flatten)]
        connection: Connection,
        name: String,
        /// Its peer URLs (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (it stays one until promoted).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by its id (hex).
    Remove {
        #[command(flatten)]
        connection: Connection,
        id: String,
    },
    /// Promote a learner (hex id) to voter.
    Promote {
        #[command(flatten)]
        connection: Connection,
        id: String,
    },
}

/// Runs a client command.
pub(crate) fn run(command: ClientCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(command))
}

pub(super) async fn connect(connection: &Connection) -> anyhow::Result<Conn> {
    let channel = connect_channel(connection).await?;
    let Some(user) = &connection.user else {
        return Ok(InterceptedService::new(channel, Token(None)));
    };
    let (name, password) = match (user.split_once(':'), &connection.password) {
        (Some((name, password)), _) => (name.to_string(), password.to_string()),
        (None, Some(password)) => (user.clone(), password.clone()),
        (None, None) => {
            bail!("--user {user} needs a password: --user {user}:PASSWORD or --password")
        }
    };
    let token = AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest { name, password })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner()
        .token;
    let token = MetadataValue::try_from(token.as_str()).context("the server's token")?;
    Ok(InterceptedService::new(channel, Token(Some(token))))
}

/// The first endpoint that answers.
async fn connect_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let mut last = None;
    for endpoint in &connection.endpoints {
        let url = if endpoint.contains("://") {
            endpoint.clone()
        } else if connection.wants_tls() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        };
        let mut channel =
            Channel::from_shared(url.clone())?.connect_timeout(std::time::Duration::from_secs(2));
        if url.starts_with("https://") {
            channel = channel
                .tls_config(connection.tls()?)
                .with_context(|| format!("TLS settings for {url}"))?;
        }
        match channel.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("connecting to {url}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no endpoints given")))
}

fn print_kvs(kvs: &[keel_api::mvccpb::KeyValue], keys_only: bool) {
    for kv in kvs {
        println!("{}", String::from_utf8_lossy(&kv.key));
        if !keys_only {
            println!("{}", String::from_utf8_lossy(&kv.value));
        }
    }
}

/// Prints a watch's events until the server ends it.
async fn watch(channel: Conn, create: WatchCreateRequest) -> anyhow::Result<()> {
    let (requests, request_stream) = tokio::sync::mpsc::channel(1);
    requests
        .send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
        })
        .await?;
    let mut responses = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(request_stream))
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        if response.compact_revision != 0 {
            bail!(
                "watch canceled: required revision {} has been compacted",
                response.compact_revision
            );
        }
        if response.canceled {
            bail!("watch canceled: {}", response.cancel_reason);
        }
        for event in response.events {
            let kind = keel_api::mvccpb::event::EventType::try_from(event.r#type)
                .map_or("UNKNOWN", |t| t.as_str_name());
            println!("{kind}");
            if let Some(prev) = event.prev_kv {
                print_kvs(&[prev], false);
            }
            if let Some(kv) = event.kv {
                print_kvs(&[kv], false);
            }
        }
    }
    drop(requests);
    Ok(())
}

async fn execute(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Watch {
            connection,
            keys,
            rev,
            prev_kv,
        } => {
            let (key, range_end) = keys.into_range()?;
            let create = WatchCreateRequest {
                key: key.into(),
                range_end: range_end.into(),
                start_revision: rev,
                prev_kv,
                ..Default::default()
            };
            watch(connect(&connection).await?, create).await?;
        }
        ClientCommand::Put {
            connection,
            key,
            value,
            prev_kv,
        } => {
            let mut kv = KvClient::new(connect(&connection).await?);
            let response = kv
                .put(PutRequest {
                    key: key.into(),
                    value: value.into(),
                    prev_kv,
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("OK");
            if let Some(prev) = response.prev_kv {
                print_kvs(&[prev], false);
            }
        }
        ClientCommand::Get {
            connection,
            keys,
            limit,
            rev,
            keys_only,
            count_only,
            sort_by,
            order,
            serializable,
        } => {
            let sort_target = match sort_by.as_deref() {
                None | Some("key") => range_request::SortTarget::Key,
                Some("version") => range_request::SortTarget::Version,
                Some("create") => range_request::SortTarget::Create,
                Some("modify") => range_request::SortTarget::Mod,
                Some("value") => range_request::SortTarget::Value,
                Some(other) => {
                    bail!("--sort-by takes key, version, create, modify or value, not {other}")
                }
            };
            let sort_order = match order.as_deref() {
                None => range_request::SortOrder::None,
                Some("ascend") => range_request::SortOrder::Ascend,
                Some("descend") => range_request::SortOrder::Descend,
                Some(other) => bail!("--order takes ascend or descend, not {other}"),
            };
            let (key, range_end) = keys.into_range()?;
            let request = RangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                limit,
                revision: rev,
                keys_only,
                count_only,
                sort_target: sort_target as i32,
                sort_order: sort_order as i32,
                serializable,
                ..Default::default()
            };
            let mut kv = KvClient::new(connect(&connection).await?);
            let response = kv.range(request).await?.into_inner();
            if count_only {
                println!("{}", response.count);
            } else {
                print_kvs(&response.kvs, keys_only);
            }
        }
        ClientCommand::Del {
            connection,
            keys,
            prev_kv,
        } => {
            let (key, range_end) = keys.into_range()?;
            let request = DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv,
            };
            let mut kv = KvClient::new(connect(&connection).await?);
            let response = kv.delete_range(request).await?.into_inner();
            println!("{}", response.deleted);
            print_kvs(&response.prev_kvs, false);
        }
        ClientCommand::Txn {
            connection,
            compare,
            success,
            failure,
        } => {
            let request = TxnRequest {
                compare: compare
                    .iter()
                    .map(|c| parse_compare(c))
                    .collect::<anyhow::Result<_>>()?,
                success: success
                    .iter()
                    .map(|o| parse_op(o))
                    .collect::<anyhow::Result<_>>()?,
                failure: failure
                    .iter()
                    .map(|o| parse_op(o))
                    .collect::<anyhow::Result<_>>()?,
            };
            let mut kv = KvClient::new(connect(&connection).await?);
            let response = kv.txn(request).await?.into_inner();
            println!(
                "{}",
                if response.succeeded {
                    "SUCCESS"
                } else {
                    "FAILURE"
                }
            );
            for op in response.responses {
                match op.response {
                    Some(response_op::Response::ResponsePut(_)) => println!("\nOK"),
                    Some(response_op::Response::ResponseRange(r)) => {
                        println!();
                        print_kvs(&r.kvs, false);
                    }
                    Some(response_op::Response::ResponseDeleteRange(r)) => {
                        println!("\n{}", r.deleted)
                    }
                    _ => {}
                }
            }
        }
        ClientCommand::Compact {
            connection,
            revision,
        } => {
            let mut kv = KvClient::new(connect(&connection).await?);
            kv.compact(CompactionRequest {
                revision,
                physical: true,
            })
            .await?;
            println!("compacted revision {revision}");
        }
        ClientCommand::Member(member) => member_command(member).await?,
        ClientCommand::Lease(lease) => lease_command(lease).await?,
        ClientCommand::Lock {
            connection,
            name,
            ttl,
            command,
        } => lock(connection, name, ttl, command).await?,
        ClientCommand::Elect {
            connection,
            name,
            proposal,
            listen,
            ttl,
        } => elect(connection, name, proposal, listen, ttl).await?,
        ClientCommand::Status { connection } => {
            for endpoint in &connection.endpoints {
                let one = Connection {
                    endpoints: vec![endpoint.clone()],
                    ..connection.clone()
                };
                let mut m = MaintenanceClient::new(connect(&one).await?);
                let s = m.status(StatusRequest {}).await?.into_inner();
                let header = s.header.unwrap_or_default();
                println!(
                    "{endpoint}, {:x}, {}, {} bytes, leader {:x}{}, term {}, index {}, applied {}{}",
                    header.member_id,
                    s.version,
                    s.db_size,
                    s.leader,
                    if s.leader == header.member_id { " (this member)" } else { "" },
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    if s.errors.is_empty() { String::new() } else { format!(", alarms: {}", s.errors.join("; ")) }
                );
            }
        }
    }
    Ok(())
}

async fn member_command(command: MemberCommand) -> anyhow::Result<()> {
    let print = |members: &[Member]| {
        for m in members {
            println!(
                "{:x}, {}, {}, {}, {}, {}",
                m.id,
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                },
                m.name,
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner
            );
        }
    };
    let parse_id = |id: &str| {
        u64::from_str_radix(id, 16).with_context(|| format!("`{id}` is not a hex member id"))
    };
    match command {
        MemberCommand::List { connection } => {
            let mut c = ClusterClient::new(connect(&connection).await?);
            print(
                &c.member_list(MemberListRequest::default())
                    .await?
                    .into_inner()
                    .members,
            );
        }
        MemberCommand::Add {
            connection,
            name,
            peer_urls,
            learner,
        } => {
            let mut c = ClusterClient::new(connect(&connection).await?);
            let response = c
                .member_add(MemberAddRequest {
                    peer_ur_ls: peer_urls.clone(),
                    is_learner: learner,
                })
                .await?
                .into_inner();
            let id = response.member.map_or(0, |m| m.id);
            println!("Member {id:x} added to the cluster");
            let mut initial: Vec<String> = response
                .members
                .iter()
                .filter(|m| m.id != id && !m.name.is_empty())
                .filter_map(|m| Some(format!("{}={}", m.name, m.peer_ur_ls.first()?)))
                .collect();
            initial.push(format!("{name}={}", peer_urls[0]));
            println!(
                "\nStart it with:\n  keel serve --name {name} --listen-peer-url {} \
                 --initial-cluster {} --initial-cluster-state existing",
                peer_urls[0],
                initial.join(",")
            );
        }
        MemberCommand::Remove { connection, id } => {
            let id = parse_id(&id)?;
            let mut c = ClusterClient::new(connect(&connection).await?);
            c.member_remove(MemberRemoveRequest { id }).await?;
            println!("Member {id:x} removed from the cluster");
        }
        MemberCommand::Promote { connection, id } => {
            let id = parse_id(&id)?;
            let mut c = ClusterClient::new(connect(&connection).await?);
            c.member_promote(MemberPromoteRequest { id }).await?;
            println!("Member {id:x} promoted");
        }
    }
    Ok(())
}

/// Parses `target(key) op value`, e.g. `value(k) = v` or `version(k) > 2`.
fn parse_compare(text: &str) -> anyhow::Result<Compare> {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let usage = || format!("`{text}` is not `target(key) op value` (e.g. `value(k) = v`)");
    let (target, rest) = text.split_once('(').with_context(usage)?;
    let (key, rest) = rest.split_once(')').with_context(usage)?;
    let mut words = rest.trim().splitn(2, ' ');
    let op = words.next().with_context(usage)?;
    let value = words.next().unwrap_or("").trim();
    let result = match op {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => bail!(usage()),
    };
    let number = || {
        value
            .parse::<i64>()
            .with_context(|| format!("`{value}` is not a number"))
    };
    let (target, union) = match target.trim() {
        "value" => (
            CompareTarget::Value,
            TargetUnion::Value(value.as_bytes().to_vec().into()),
        ),
        "version" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number()?)),
        other => bail!("compare target `{other}` is not value, version, create, mod or lease"),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.as_bytes().to_vec().into(),
        target_union: Some(union),
        range_end: Default::default(),
    })
}

/// Parses `put k v`, `get k` or `del k`.
fn parse_op(text: &str) -> anyhow::Result<RequestOp> {
    use request_op::Request;
    let mut words = text.trim().splitn(3, ' ');
    let request = match (words.next(), words.next(), words.next()) {
        (Some("put"), Some(key), Some(value)) => Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        }),
        (Some("get"), Some(key), None) => Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        }),
        (Some("del"), Some(key), None) => Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        }),
        _ => bail!("`{text}` is not `put key value`, `get key` or `del key`"),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_ops_parse_and_mistakes_are_explained() {
        let c = parse_compare("value(k1) = v1").unwrap();
        assert_eq!(&c.key[..], b"k1");
        assert_eq!(c.target, compare::CompareTarget::Value as i32);
        assert!(
            matches!(c.target_union, Some(compare::TargetUnion::Value(ref v)) if &v[..] == b"v1")
        );
        let c = parse_compare("mod(k) > 4").unwrap();
        assert_eq!(c.result, compare::CompareResult::Greater as i32);
        assert!(parse_compare("version(k) > x")
            .unwrap_err()
            .to_string()
            .contains("not a number"));
        assert!(parse_compare("k = v").is_err());
        assert!(parse_op("put k hello world").is_ok());
        assert!(parse_op("frob k")
            .unwrap_err()
            .to_string()
            .contains("put key value"));
    }
}
