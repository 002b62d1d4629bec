//! `keel serve` settings: every key can come from a TOML file (`--config`)
//! and from a flag of the same name; flags win, then the file, then the
//! defaults. `keel.example.toml` at the repository root documents each key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::tls::TlsFiles;

/// Every setting, each optional: what one source (file or flags) says.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// This member's human-readable name.
    #[arg(long)]
    pub name: Option<String>,
    /// Where the raft log, snapshots and the key-value store live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to serve clients on (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub listen_client_urls: Option<Vec<String>>,
    /// Client URLs told to the rest of the cluster (defaults to the listen URLs).
    #[arg(long, value_delimiter = ',')]
    pub advertise_client_urls: Option<Vec<String>>,
    /// The URL to serve peers on.
    #[arg(long)]
    pub listen_peer_url: Option<String>,
    /// The peer URL told to the rest of the cluster (defaults to the listen URL).
    #[arg(long)]
    pub advertise_peer_url: Option<String>,
    /// The members of a new cluster: `name=peer-url,name=peer-url,...`.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to join one after `member add`.
    #[arg(long)]
    pub initial_cluster_state: Option<String>,
    /// Makes the ids of different clusters with the same members differ.
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
    /// Milliseconds between leader heartbeats (one raft tick).
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds without a leader before a follower campaigns.
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// Applied entries between two snapshots of the store.
    #[arg(long)]
    pub snapshot_count: Option<u64>,
    /// The largest client request accepted, in bytes.
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// The most operations one transaction may hold.
    #[arg(long)]
    pub max_txn_ops: Option<usize>,
    /// Store size in bytes past which writes are refused (NOSPACE alarm).
    #[arg(long)]
    pub quota_backend_bytes: Option<u64>,
    /// Bytes kept free on the data directory's disk: below this, writes
    /// are refused (reads go on) until space returns. `0`: no reserve.
    #[arg(long)]
    pub min_free_disk_bytes: Option<u64>,
    /// Milliseconds a request may wait for raft before it fails.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// `periodic` (keep the last stretch of time) or `revision` (keep the
    /// last revisions).
    #[arg(long)]
    pub auto_compaction_mode: Option<String>,
    /// How much history automatic compaction keeps: `0` (off), a duration
    /// (`30m`, `1h`; a bare number is hours) or a number of revisions.
    #[arg(long)]
    pub auto_compaction_retention: Option<String>,
    /// How often watches that asked for progress notifications get one
    /// (a duration: `90s`, `10m`, `1h`; etcd's default is 10 minutes).
    #[arg(long)]
    pub watch_progress_notify_interval: Option<String>,
    /// The most watches one watch stream may hold (a create past it is
    /// canceled with a clear reason).
    #[arg(long)]
    pub max_watches_per_stream: Option<usize>,
    /// How many bytes of responses a watch stream buffers for a client
    /// that reads slowly; past it the stream's watchers catch up from
    /// history.
    #[arg(long)]
    pub watch_stream_buffer_bytes: Option<usize>,
    /// Log filter: a level (`info`) or tracing directives (`keel=debug,info`).
    #[arg(long)]
    pub log_level: Option<String>,
    /// `auto` (text on a terminal), `text` or `json`.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Also write logs to rolling files in this directory.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Roll a log file once it reaches this many megabytes.
    #[arg(long)]
    pub log_max_size_mb: Option<u64>,
    /// Keep at most this many log files (older ones are deleted).
    #[arg(long)]
    pub log_max_files: Option<usize>,
    /// Seconds an auth token stays valid (etcd's `--auth-token-ttl`).
    #[arg(long)]
    pub auth_token_ttl: Option<u64>,
    /// The bcrypt cost of password hashes, 4 to 31 (etcd's
    /// `--bcrypt-cost`; each step doubles the work of a login).
    #[arg(long)]
    pub bcrypt_cost: Option<u32>,
    /// The client port's certificate (PEM); with `key_file` set, the
    /// client port speaks only TLS (`https://` client URLs).
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The CA certificates (PEM) that sign client certificates.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `trusted_ca_file`
    /// (the certificate's Common Name is the user under auth).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: Option<bool>,
    /// The peer port's certificate (PEM), also presented when dialing
    /// other members; with `peer_key_file` set, peers speak only TLS
    /// (`https://` peer URLs).
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of `peer_cert_file` (PEM).
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// The CA certificates (PEM) that sign the members' peer certificates.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a certificate signed by `peer_trusted_ca_file`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub peer_client_cert_auth: Option<bool>,
}

macro_rules! overlay {
    ($low:expr, $high:expr, $($field:ident),+ $(,)?) => {
        Settings { $($field: $high.$field.or($low.$field)),+ }
    };
}

impl Settings {
    /// Reads a TOML file of settings.
    pub(crate) fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// These settings with every key `over` sets replaced by its value.
    pub(crate) fn overlaid_with(self, over: Settings) -> Settings {
        overlay!(
            self,
            over,
            name,
            data_dir,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_url,
            advertise_peer_url,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token,
            heartbeat_interval_ms,
            election_timeout_ms,
            snapshot_count,
            max_request_bytes,
            max_txn_ops,
            quota_backend_bytes,
            min_free_disk_bytes,
            request_timeout_ms,
            auto_compaction_mode,
            auto_compaction_retention,
            watch_progress_notify_interval,
            max_watches_per_stream,
            watch_stream_buffer_bytes,
            log_level,
            log_format,
            log_dir,
            log_max_size_mb,
            log_max_files,
            auth_token_ttl,
            bcrypt_cost,
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth,
            peer_cert_file,
            peer_key_file,
            peer_trusted_ca_file,
            peer_client_cert_auth,
        )
    }
}

/// Whether a member bootstraps a new cluster or joins a running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClusterState {
    /// Bootstrap with the members of `initial_cluster`.
    New,
    /// Join a cluster that has already added this member.
    Existing,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Resolved settings, defaults filled in and checked.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// This member's name.
    pub name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Addresses (`host:port`) to serve clients on.
    pub listen_client: Vec<String>,
    /// Client URLs advertised to the cluster.
    pub advertise_client_urls: Vec<String>,
    /// The address (`host:port`) to serve peers on.
    pub listen_peer: String,
    /// The peer URL advertised to the cluster.
    pub advertise_peer_url: String,
    /// `(name, peer URL)` of each initial member.
    pub initial_cluster: Vec<(String, String)>,
    /// New cluster or join.
    pub cluster_state: ClusterState,
    /// The initial cluster token.
    pub cluster_token: String,
    /// One raft tick.
    pub heartbeat_interval: Duration,
    /// Ticks before an election.
    pub election_ticks: u32,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// The request size cap in bytes.
    pub max_request_bytes: usize,
    /// The transaction operation cap.
    pub max_txn_ops: usize,
    /// The store size quota in bytes.
    pub quota_backend_bytes: u64,
    /// Bytes kept free on the data directory's disk (0: none).
    pub min_free_disk_bytes: u64,
    /// How long a request may wait on raft.
    pub request_timeout: Duration,
    /// How much history the leader keeps when compacting automatically;
    /// `None`: it does not.
    pub auto_compaction: Option<Retention>,
    /// How often watches that asked for it get a progress notification.
    pub watch_progress_notify_interval: Duration,
    /// The most watches one watch stream may hold.
    pub max_watches_per_stream: usize,
    /// The bytes of responses a watch stream buffers.
    pub watch_stream_buffer_bytes: usize,
    /// The log filter.
    pub log_level: String,
    /// The log format.
    pub log_format: LogFormat,
    /// The rolling log directory, if any.
    pub log_dir: Option<PathBuf>,
    /// The size at which a log file rolls.
    pub log_max_bytes: u64,
    /// How many log files are kept.
    pub log_max_files: usize,
    /// How long an auth token stays valid.
    pub auth_token_ttl: Duration,
    /// The bcrypt cost of password hashes.
    pub bcrypt_cost: u32,
    /// TLS on the client port; `None`: plaintext.
    pub client_tls: Option<TlsFiles>,
    /// TLS between members; `None`: plaintext.
    pub peer_tls: Option<TlsFiles>,
}

/// The default client address: etcd's port, so `etcdctl` needs no flags.
pub(crate) const DEFAULT_CLIENT_ADDRESS: &str = "127.0.0.1:2379";
/// The default peer address.
pub(crate) const DEFAULT_PEER_ADDRESS: &str = "127.0.0.1:2380";
/// The default peer URL without TLS (`keel snapshot restore`'s default).
pub(crate) const DEFAULT_PEER_URL: &str = "http://127.0.0.1:2380";

impl Config {
    /// The election timeout: `election_ticks` heartbeats.
    pub(crate) fn election_timeout(&self) -> Duration {
        self.heartbeat_interval * self.election_ticks
    }

    /// The shortest TTL a lease is granted, in whole seconds: one and a
    /// half election timeouts, rounded up, as etcd derives it (2 s with the
    /// defaults), so a lease outlives a leader election.
    pub(crate) fn min_lease_ttl(&self) -> i64 {
        let ticks = (3 * self.election_ticks) / 2;
        let min = self.heartbeat_interval * ticks;
        (min.as_secs() + u64::from(min.subsec_nanos() > 0)) as i64
    }

    /// Fills in defaults and checks `settings`; errors name the bad key.
    pub(crate) fn resolve(s: Settings) -> anyhow::Result<Config> {
        let name = s.name.unwrap_or_else(|| "default".into());
        let client_tls = Port::Client.tls(
            s.cert_file,
            s.key_file,
            s.trusted_ca_file,
            s.client_cert_auth,
        )?;
        let peer_tls = Port::Peer.tls(
            s.peer_cert_file,
            s.peer_key_file,
            s.peer_trusted_ca_file,
            s.peer_client_cert_auth,
        )?;
        let client_scheme = Port::Client.scheme(client_tls.is_some());
        let peer_scheme = Port::Peer.scheme(peer_tls.is_some());
        let listen_client_urls = s
            .listen_client_urls
            .unwrap_or_else(|| vec![client_scheme.default_url(DEFAULT_CLIENT_ADDRESS)]);
        let listen_client = listen_client_urls
            .iter()
            .map(|u| client_scheme.check(u).context("listen_client_urls"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let advertise_client_urls = s.advertise_client_urls.unwrap_or(listen_client_urls);
        for url in &advertise_client_urls {
            client_scheme.check(url).context("advertise_client_urls")?;
        }
        let listen_peer_url = s
            .listen_peer_url
            .unwrap_or_else(|| peer_scheme.default_url(DEFAULT_PEER_ADDRESS));
        let listen_peer = peer_scheme
            .check(&listen_peer_url)
            .context("listen_peer_url")?;
        let advertise_peer_url = s.advertise_peer_url.unwrap_or(listen_peer_url);
        peer_scheme
            .check(&advertise_peer_url)
            .context("advertise_peer_url")?;
        let initial_cluster = match s.initial_cluster {
            Some(list) => parse_initial_cluster(&list).context("initial_cluster")?,
            None => vec![(name.clone(), advertise_peer_url.clone())],
        };
        for (_, url) in &initial_cluster {
            peer_scheme.check(url).context("initial_cluster")?;
        }
        let cluster_state = match s.initial_cluster_state.as_deref().unwrap_or("new") {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => bail!("initial_cluster_state must be `new` or `existing`, not `{other}`"),
        };
        if cluster_state == ClusterState::New
            && !initial_cluster
                .iter()
                .any(|(n, url)| *n == name && *url == advertise_peer_url)
        {
            bail!(
                "initial_cluster has no entry `{name}={advertise_peer_url}` for this member \
                 (its name and advertised peer URL)"
            );
        }
        let heartbeat_ms = s.heartbeat_interval_ms.unwrap_or(100);
        let election_ms = s.election_timeout_ms.unwrap_or(1000);
        if heartbeat_ms == 0 {
            bail!("heartbeat_interval_ms must be positive");
        }
        if election_ms < 3 * heartbeat_ms {
            bail!("election_timeout_ms ({election_ms}) must be at least 3 × heartbeat_interval_ms ({heartbeat_ms})");
        }
        let log_format = match s.log_format.as_deref().unwrap_or("auto") {
            "auto" => LogFormat::Auto,
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log_format must be `auto`, `text` or `json`, not `{other}`"),
        };
        let positive = |value: u64, key: &str| -> anyhow::Result<u64> {
            if value == 0 {
                bail!("{key} must be positive");
            }
            Ok(value)
        };
        Ok(Config {
            name,
            data_dir: s.data_dir.unwrap_or_else(|| "keel-data".into()),
            listen_client,
            advertise_client_urls,
            listen_peer,
            advertise_peer_url,
            initial_cluster,
            cluster_state,
            cluster_token: s
                .initial_cluster_token
                .unwrap_or_else(|| "keel-cluster".into()),
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            election_ticks: u32::try_from(election_ms / heartbeat_ms)
                .context("election_timeout_ms is too large")?,
            snapshot_count: positive(s.snapshot_count.unwrap_or(100_000), "snapshot_count")?,
            max_request_bytes: positive(
                s.max_request_bytes.unwrap_or(3 * 512 * 1024) as u64,
                "max_request_bytes",
            )? as usize,
            max_txn_ops: positive(s.max_txn_ops.unwrap_or(128) as u64, "max_txn_ops")? as usize,
            quota_backend_bytes: positive(
                s.quota_backend_bytes.unwrap_or(2 * 1024 * 1024 * 1024),
                "quota_backend_bytes",
            )?,
            min_free_disk_bytes: s.min_free_disk_bytes.unwrap_or(64 * 1024 * 1024),
            request_timeout: Duration::from_millis(positive(
                s.request_timeout_ms.unwrap_or(5000),
                "request_timeout_ms",
            )?),
            auto_compaction: Retention::parse(
                s.auto_compaction_mode.as_deref().unwrap_or("periodic"),
                s.auto_compaction_retention.as_deref().unwrap_or("0"),
            )
            .context("auto_compaction_mode / auto_compaction_retention")?,
            watch_progress_notify_interval: match parse_duration(
                s.watch_progress_notify_interval.as_deref().unwrap_or("10m"),
            )
            .context("watch_progress_notify_interval")?
            {
                d if d.is_zero() => bail!("watch_progress_notify_interval must be above zero"),
                d => d,
            },
            max_watches_per_stream: positive(
                s.max_watches_per_stream.unwrap_or(10_000) as u64,
                "max_watches_per_stream",
            )? as usize,
            watch_stream_buffer_bytes: positive(
                s.watch_stream_buffer_bytes.unwrap_or(1 << 20) as u64,
                "watch_stream_buffer_bytes",
            )? as usize,
            log_level: s.log_level.unwrap_or_else(|| "info".into()),
            log_format,
            log_dir: s.log_dir,
            log_max_bytes: positive(s.log_max_size_mb.unwrap_or(64), "log_max_size_mb")?
                * 1024
                * 1024,
            log_max_files: positive(s.log_max_files.unwrap_or(8) as u64, "log_max_files")? as usize,
            auth_token_ttl: Duration::from_secs(positive(
                s.auth_token_ttl.unwrap_or(300),
                "auth_token_ttl",
            )?),
            bcrypt_cost: match s.bcrypt_cost.unwrap_or(bcrypt::DEFAULT_COST) {
                cost @ 4..=31 => cost,
                other => bail!("bcrypt_cost must be 4 to 31, not {other}"),
            },
            client_tls,
            peer_tls,
        })
    }
}

/// Which port a TLS setting is for: it names the keys in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Client,
    Peer,
}

impl Port {
    /// The prefix of this port's TLS keys.
    fn prefix(self) -> &'static str {
        match self {
            Port::Client => "",
            Port::Peer => "peer_",
        }
    }

    /// This port's TLS files, checked for what goes together. Members
    /// check each other's peer certificates, so peer TLS needs its CA.
    fn tls(
        self,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        trusted_ca: Option<PathBuf>,
        cert_auth: Option<bool>,
    ) -> anyhow::Result<Option<TlsFiles>> {
        let p = self.prefix();
        let auth_key = match self {
            Port::Client => "client_cert_auth",
            Port::Peer => "peer_client_cert_auth",
        };
        let client_cert_auth = cert_auth.unwrap_or(false);
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => {
                if trusted_ca.is_some() || client_cert_auth {
                    bail!(
                        "{p}trusted_ca_file and {auth_key} need {p}cert_file and {p}key_file \
                         (TLS on the port)"
                    );
                }
                return Ok(None);
            }
            _ => bail!("{p}cert_file and {p}key_file go together: set both or neither"),
        };
        if trusted_ca.is_none() && (client_cert_auth || self == Port::Peer) {
            let why = if client_cert_auth {
                format!("{auth_key} checks certificates")
            } else {
                "members check each other's certificates".to_string()
            };
            bail!("{p}trusted_ca_file is needed: {why} against it");
        }
        Ok(Some(TlsFiles {
            cert,
            key,
            trusted_ca,
            client_cert_auth,
        }))
    }

    /// The scheme this port's URLs must have.
    fn scheme(self, tls: bool) -> Scheme {
        Scheme { port: self, tls }
    }
}

/// The URL scheme a port is served with: `https` with TLS.
#[derive(Clone, Copy, Debug)]
struct Scheme {
    port: Port,
    tls: bool,
}

impl Scheme {
    fn name(self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The URL of `address` with this scheme.
    fn default_url(self, address: &str) -> String {
        format!("{}://{address}", self.name())
    }

    /// The `host:port` of `url`, whose scheme must be this one.
    fn check(self, url: &str) -> anyhow::Result<String> {
        let (tls, address) = parse_url(url)?;
        let p = self.port.prefix();
        match (tls, self.tls) {
            (true, false) => bail!(
                "`{url}` is https, but {p}cert_file and {p}key_file are not set (TLS needs them)"
            ),
            (false, true) => bail!(
                "`{url}` is plain http, but {p}cert_file and {p}key_file are set: \
                 the port speaks TLS, write https://"
            ),
            _ => Ok(address),
        }
    }
}

/// How much history automatic compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retention {
    /// The revisions of the last this long.
    Periodic(Duration),
    /// The last this many revisions.
    Revision(i64),
}

impl Retention {
    /// Parses etcd's mode (`periodic` or `revision`) and retention: for
    /// `periodic` a duration (`90s`, `30m`, `1h`; a bare number is hours),
    /// for `revision` a count. `None` when the retention is zero (off).
    pub(crate) fn parse(mode: &str, retention: &str) -> anyhow::Result<Option<Retention>> {
        let retention = retention.trim();
        let policy = match mode {
            "periodic" => Retention::Periodic(parse_duration(retention)?),
            "revision" => Retention::Revision(
                retention
                    .parse()
                    .with_context(|| format!("`{retention}` is not a number of revisions"))?,
            ),
            other => bail!("must be `periodic` or `revision`, not `{other}`"),
        };
        Ok(match policy {
            Retention::Periodic(d) if d.is_zero() => None,
            Retention::Revision(n) if n <= 0 => None,
            policy => Some(policy),
        })
    }
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "h"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 90s, 30m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("`{text}` is not a duration like 90s, 30m or 1h"),
    };
    Ok(Duration::from_secs(seconds))
}

/// The `host:port` of an `http://host:port` or `https://host:port` URL.
pub(crate) fn host_port(url: &str) -> anyhow::Result<String> {
    Ok(parse_url(url)?.1)
}

/// Whether `url` is `https`, and its `host:port`.
fn parse_url(url: &str) -> anyhow::Result<(bool, String)> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        bail!("`{url}` is not an http:// or https:// URL");
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok((tls, rest.to_string()))
        }
        _ => bail!("`{url}` needs a host and a port, like http://127.0.0.1:2380"),
    }
}

/// Parses `name=url,name=url`.
pub(crate) fn parse_initial_cluster(list: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut members: Vec<(String, String)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, url)) = item.split_once('=') else {
            bail!("`{item}` is not `name=peer-url`");
        };
        host_port(url)?;
        if members.iter().any(|(_, u)| u == url) {
            bail!("peer URL {url} is listed twice");
        }
        members.push((name.to_string(), url.to_string()));
    }
    if members.is_empty() {
        bail!("no members listed");
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_etcd_ports_and_a_single_member() {
        let c = Config::resolve(Settings::default()).unwrap();
        assert_eq!(c.listen_client, vec!["127.0.0.1:2379"]);
        assert_eq!(c.listen_peer, "127.0.0.1:2380");
        assert_eq!(c.data_dir, PathBuf::from("keel-data"));
        assert_eq!(
            c.initial_cluster,
            vec![("default".to_string(), DEFAULT_PEER_URL.to_string())]
        );
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.election_ticks, 10);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: Settings = toml::from_str(
            "name = \"a\"\ndata_dir = \"/from/file\"\nmax_txn_ops = 7\nlisten_client_urls = [\"http://127.0.0.1:1\"]",
        )
        .unwrap();
        let flags = Settings {
            data_dir: Some("/from/flag".into()),
            ..Settings::default()
        };
        let merged = file.overlaid_with(flags);
        assert_eq!(merged.data_dir, Some(PathBuf::from("/from/flag")));
        assert_eq!(merged.name.as_deref(), Some("a"));
        assert_eq!(merged.max_txn_ops, Some(7));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |s: Settings| format!("{:#}", Config::resolve(s).unwrap_err());
        assert!(toml::from_str::<Settings>("nmae = \"x\"")
            .unwrap_err()
            .to_string()
            .contains("nmae"));
        assert!(err(Settings {
            listen_peer_url: Some("https://h:1".into()),
            ..Default::default()
        })
        .contains("https"));
        assert!(err(Settings {
            initial_cluster: Some("a=http://h:1,b".into()),
            ..Default::default()
        })
        .contains("`b` is not `name=peer-url`"));
        assert!(err(Settings {
            name: Some("c".into()),
            initial_cluster: Some("a=http://h:1".into()),
            ..Default::default()
        })
        .contains("no entry `c=http://127.0.0.1:2380`"));
        assert!(err(Settings {
            initial_cluster_state: Some("old".into()),
            ..Default::default()
        })
        .contains("`new` or `existing`"));
        assert!(err(Settings {
            max_txn_ops: Some(0),
            ..Default::default()
        })
        .contains("max_txn_ops must be positive"));
    }

    #[test]
    fn tls_keys_are_checked_together_and_against_the_url_schemes() {
        let err = |s: Settings| format!("{:#}", Config::resolve(s).unwrap_err());
        let tls = || Settings {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            listen_client_urls: Some(vec!["https://127.0.0.1:1".into()]),
            ..Default::default()
        };
        let c = Config::resolve(tls()).unwrap();
        assert_eq!(c.listen_client, vec!["127.0.0.1:1"]);
        assert_eq!(c.advertise_client_urls, vec!["https://127.0.0.1:1"]);
        assert_eq!(c.client_tls.unwrap().cert, PathBuf::from("c.pem"));
        assert!(c.peer_tls.is_none());
        // The default URL follows the port's TLS.
        let c = Config::resolve(Settings {
            listen_client_urls: None,
            ..tls()
        })
        .unwrap();
        assert_eq!(c.advertise_client_urls, vec!["https://127.0.0.1:2379"]);

        assert!(err(Settings {
            key_file: None,
            ..tls()
        })
        .contains("cert_file and key_file go together"));
        assert!(err(Settings {
            listen_client_urls: Some(vec!["http://127.0.0.1:1".into()]),
            ..tls()
        })
        .contains("listen_client_urls: `http://127.0.0.1:1` is plain http, but cert_file"));
        assert!(err(Settings {
            listen_client_urls: Some(vec!["https://127.0.0.1:1".into()]),
            ..Default::default()
        })
        .contains("is https, but cert_file and key_file are not set"));
        assert!(err(Settings {
            client_cert_auth: Some(true),
            ..tls()
        })
        .contains("trusted_ca_file is needed: client_cert_auth checks certificates"));
        assert!(err(Settings {
            trusted_ca_file: Some("ca.pem".into()),
            ..Default::default()
        })
        .contains("need cert_file and key_file"));
        // Peers check each other: peer TLS needs its CA, and https peer URLs.
        let peer = || Settings {
            peer_cert_file: Some("c.pem".into()),
            peer_key_file: Some("k.pem".into()),
            peer_trusted_ca_file: Some("ca.pem".into()),
            listen_peer_url: Some("https://127.0.0.1:2".into()),
            ..Default::default()
        };
        let c = Config::resolve(peer()).unwrap();
        assert_eq!(c.initial_cluster[0].1, "https://127.0.0.1:2");
        assert!(c.peer_tls.is_some() && c.client_tls.is_none());
        assert!(err(Settings {
            peer_trusted_ca_file: None,
            ..peer()
        })
        .contains("peer_trusted_ca_file is needed: members check"));
        assert!(err(Settings {
            initial_cluster: Some("default=https://127.0.0.1:2,b=http://127.0.0.1:3".into()),
            ..peer()
        })
        .contains("initial_cluster: `http://127.0.0.1:3` is plain http, but peer_cert_file"));
    }

    #[test]
    fn cert_auth_flags_take_a_value_or_none_like_etcd() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            settings: Settings,
        }
        let parse = |args: &[&str]| {
            <Flags as clap::Parser>::try_parse_from(
                std::iter::once("keel").chain(args.iter().copied()),
            )
            .unwrap()
            .settings
        };
        assert_eq!(parse(&["--client-cert-auth"]).client_cert_auth, Some(true));
        assert_eq!(
            parse(&["--client-cert-auth=false"]).client_cert_auth,
            Some(false)
        );
        let s = parse(&["--peer-client-cert-auth=true", "--peer-cert-file", "p.pem"]);
        assert_eq!(s.peer_client_cert_auth, Some(true));
        assert_eq!(s.peer_cert_file, Some(PathBuf::from("p.pem")));
        assert_eq!(parse(&[]).client_cert_auth, None);
    }

    #[test]
    fn the_example_config_parses_and_resolves() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../keel.example.toml");
        let settings = Settings::from_file(&path).unwrap();
        Config::resolve(settings).unwrap();
    }

    #[test]
    fn the_example_config_shows_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../keel.example.toml");
        let example = std::fs::read_to_string(path).unwrap();
        let flags = <Settings as clap::Args>::augment_args(clap::Command::new("keel"));
        for key in flags.get_arguments().map(|a| a.get_id().as_str()) {
            assert!(
                example
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
                "keel.example.toml does not show `{key}`"
            );
        }
    }

    #[test]
    fn retention_parses_like_etcd() {
        let parse = Retention::parse;
        assert_eq!(
            parse("periodic", "1").unwrap(),
            Some(Retention::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse("periodic", "30m").unwrap(),
            Some(Retention::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse("periodic", "90s").unwrap(),
            Some(Retention::Periodic(Duration::from_secs(90)))
        );
        assert_eq!(parse("periodic", "0").unwrap(), None);
        assert_eq!(
            parse("revision", "1000").unwrap(),
            Some(Retention::Revision(1000))
        );
        assert_eq!(parse("revision", "0").unwrap(), None);
        for (mode, retention) in [
            ("periodic", "1d"),
            ("periodic", "h"),
            ("periodic", "-5m"),
            ("revision", "10m"),
            ("hourly", "1"),
        ] {
            assert!(parse(mode, retention).is_err(), "{mode} {retention}");
        }
    }
}
