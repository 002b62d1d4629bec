//! TLS on real members, with certificates made by the test (rcgen): a
//! three-member cluster with client and peer TLS and client certificate
//! auth on both ports serves TLS clients (gRPC, writes through followers,
//! HTTP/1.1 and the admin overview, the keel CLI); clients without a
//! certificate or with another CA's, plaintext clients and garbage
//! handshakes are refused while the members keep serving; a member whose
//! peer certificate another CA signed gets no raft traffic and cannot join;
//! a missing or unusable certificate file stops the start, named.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{Ca, Issued};
use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::{MemberAddRequest, PutRequest, RangeRequest};
use keel_testkit::{Flavor, Tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The keel binary under test.
fn keel() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keel"))
}

/// Client settings trusting `ca`, presenting `identity`.
fn client_tls(ca: &Path, identity: Option<&Issued>) -> ClientTlsConfig {
    let pem = |path: &Path| std::fs::read(path).expect("a PEM file");
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(ca)));
    match identity {
        Some(issued) => config.identity(Identity::from_pem(pem(&issued.cert), pem(&issued.key))),
        None => config,
    }
}

/// The flags that serve a port with `issued`, trusting `ca` and
/// requiring client certificates: `prefix` is `""` or `"peer-"`.
fn port_flags(prefix: &str, ca: &Path, issued: &Issued) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        format!("--{prefix}cert-file={}", path(&issued.cert)),
        format!("--{prefix}key-file={}", path(&issued.key)),
        format!("--{prefix}trusted-ca-file={}", path(ca)),
        format!(
            "--{}client-cert-auth",
            if prefix.is_empty() { "" } else { "peer-" }
        ),
    ]
}

/// Prepares three members (fast raft timing) with `tls`, member `i`
/// given `flags(i)`, and starts them.
fn start(tls: Tls, flags: impl Fn(usize) -> Vec<String>) -> keel_testkit::Cluster {
    let timing = [
        "--heartbeat-interval-ms",
        "50",
        "--election-timeout-ms",
        "500",
        "--log-level",
        "info,keel::tls=debug",
    ];
    let mut cluster = keel_testkit::Cluster::prepare(Flavor::Keel, keel(), 3, &timing, tls);
    for i in 0..3 {
        cluster.members[i].args = flags(i);
        cluster.spawn(i);
    }
    cluster
}

/// A channel to `address` with `tls` (plaintext without).
async fn channel(address: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// Puts `key = value` through `address`.
async fn put(
    address: &str,
    tls: Option<ClientTlsConfig>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let mut kv = KvClient::new(channel(address, tls).await?);
    kv.put(PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    })
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// The value of `key` read (linearizably) through `address`.
async fn get(address: &str, tls: ClientTlsConfig, key: &str) -> Option<String> {
    let mut kv = KvClient::new(channel(address, Some(tls)).await.expect("connects"));
    let response = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("a range")
        .into_inner();
    let kv = response.kvs.first()?;
    Some(String::from_utf8_lossy(&kv.value).into_owned())
}

/// One HTTP/1.0 GET over TLS (ALPN `http/1.1`), read to the end.
async fn https_get(address: &str, ca: &Path, identity: &Issued, path: &str) -> String {
    let pem = |p: &Path| std::fs::read(p).unwrap();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem(ca)) {
        roots.add(cert.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_slice_iter(&pem(&identity.cert))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PemObject::from_pem_slice(&pem(&identity.key)).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("a TLS handshake with ALPN http/1.1");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A server may end a TLS stream without close_notify; what came is enough.
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `bytes` on a raw connection to `address` and says whether the
/// server closed it (within two seconds) without answering a thing.
async fn closed_without_answer(address: &str, bytes: &[u8]) -> bool {
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer)).await;
    // A TLS alert is all a server may send back; no HTTP answer.
    read.is_ok() && !String::from_utf8_lossy(&answer).contains("HTTP")
}

/// Runs the keel CLI with `args`: its success and stdout.
fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(keel()).args(args).output().expect("runs keel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_certified_clients_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let member = ca.issue(dir.path(), "member");
    let root = ca.issue(dir.path(), "root");
    let rogue = Ca::new(dir.path(), "rogue").issue(dir.path(), "mallory");
    let good = || client_tls(&ca.cert, Some(&root));
    let mut cluster = start(
        Tls {
            client: Some(good()),
            peer: true,
        },
        |_| {
            let mut flags = port_flags("", &ca.cert, &member);
            flags.extend(port_flags("peer-", &ca.cert, &member));
            flags
        },
    );
    cluster.wait_for_leader().await;
    let address = |i: usize| cluster.members[i].spec.client.clone();

    // Writes through every member (followers forward to the leader over
    // the peer port's TLS), read back from every member.
    for i in 0..3 {
        put(
            &address(i),
            Some(good()),
            &format!("k{i}"),
            &format!("v{i}"),
        )
        .await
        .unwrap_or_else(|e| panic!("put through member {i}: {e}"));
    }
    for i in 0..3 {
        for k in 0..3 {
            assert_eq!(
                get(&address(i), good(), &format!("k{k}")).await.as_deref(),
                Some(format!("v{k}").as_str())
            );
        }
    }

    // Refused: no client certificate, another CA's certificate, plaintext.
    // A connection held open mid-handshake blocks nobody meanwhile.
    let mut stalled = TcpStream::connect(address(0)).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert!(put(&address(0), Some(client_tls(&ca.cert, None)), "x", "1")
        .await
        .is_err());
    assert!(put(
        &address(0),
        Some(client_tls(&ca.cert, Some(&rogue))),
        "x",
        "1"
    )
    .await
    .is_err());
    assert!(put(&address(0), None, "x", "1").await.is_err());
    // Garbage where a handshake belongs, and plaintext HTTP/2 and HTTP/1.1.
    assert!(closed_without_answer(&address(0), b"\x16\x03\x01\xff\xffgarbage\x00\x01\x02").await);
    assert!(closed_without_answer(&address(0), b"\x00\x01garbage, no handshake at all").await);
    assert!(closed_without_answer(&address(0), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await);
    assert!(closed_without_answer(&address(0), b"GET /health HTTP/1.0\r\n\r\n").await);
    drop(stalled);
    assert_eq!(get(&address(0), good(), "x").await, None);
    put(&address(0), Some(good()), "after", "refusals")
        .await
        .unwrap();
    assert_eq!(
        get(&address(1), good(), "after").await.as_deref(),
        Some("refusals")
    );

    // HTTP/1.1 over TLS: metrics, and the admin overview, for which the
    // member asks every member's client port over TLS itself.
    let metrics = https_get(&address(1), &ca.cert, &root, "/metrics").await;
    assert!(
        metrics.starts_with("HTTP/1.0 200") && metrics.contains("etcd_server_has_leader"),
        "{metrics}"
    );
    let mut overview = String::new();
    for _ in 0..50 {
        overview = https_get(&address(2), &ca.cert, &root, "/api/v1/cluster").await;
        if overview.matches("\"applied\":").count() == 3 && !overview.contains("\"applied\":null") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !overview.contains("\"applied\":null"),
        "a member's status is missing: {overview}"
    );

    // The keel CLI, as etcdctl takes its flags.
    let endpoint = address(2);
    let path = |p: &Path| p.display().to_string();
    let (ca_file, cert, key) = (path(&ca.cert), path(&root.cert), path(&root.key));
    let tls_flags = ["--cacert", &ca_file, "--cert", &cert, "--key", &key];
    let (ok, out) = cli(&[
        &["put", "--endpoints", &endpoint][..],
        &tls_flags,
        &["cli", "yes"],
    ]
    .concat());
    assert!(ok, "{out}");
    let https = format!("https://{endpoint}");
    let (ok, out) = cli(&[&["get", "--endpoints", &https][..], &tls_flags, &["cli"]].concat());
    assert!(ok && out.contains("cli\nyes"), "{out}");
    let (ok, out) = cli(&["get", "--endpoints", &endpoint, "--cacert", &ca_file, "cli"]);
    assert!(!ok, "no client certificate, yet: {out}");

    // Refused handshakes were logged (at debug) and nobody went down.
    assert!(cluster.log(0).contains("TLS handshake failed"));
    cluster.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_peer_certificate_another_ca_signed_gets_no_raft_traffic_nor_joins() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let member = ca.issue(dir.path(), "member");
    // The third member trusts the cluster's CA, but its own certificate
    // comes from another.
    let rogue = Ca::new(dir.path(), "rogue").issue(dir.path(), "rogue");
    let mut cluster = start(
        Tls {
            client: None,
            peer: true,
        },
        |i| port_flags("peer-", &ca.cert, if i == 2 { &rogue } else { &member }),
    );

    // The other two elect a leader and commit.
    let mut leader = 0;
    for _ in 0..100 {
        let (a, b) = (cluster.status(0).await, cluster.status(1).await);
        leader = a.as_ref().map_or(0, |s| s.leader);
        if leader != 0 && b.is_some_and(|b| b.leader == leader) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(leader, 0, "members 1 and 2 elect a leader");
    let address = |i: usize| cluster.members[i].spec.client.clone();
    for i in 0..10 {
        put(&address(0), None, "k", &i.to_string()).await.unwrap();
    }
    let applied = cluster.status(0).await.unwrap().raft_applied_index;

    // The third heard nothing: no leader, nothing past its bootstrap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shut_out = cluster
        .status(2)
        .await
        .expect("member 3 answers on its client port");
    assert_eq!(shut_out.leader, 0, "{shut_out:?}");
    assert!(
        shut_out.raft_applied_index < applied,
        "{shut_out:?}, leader applied {applied}"
    );
    assert!(
        cluster.log(0).contains("TLS handshake failed")
            || cluster.log(1).contains("TLS handshake failed"),
        "the rogue member's handshakes are refused"
    );

    // Nor can such a member join: added with `member add`, then started,
    // it cannot ask the cluster who it is.
    let peer = format!("127.0.0.1:{}", keel_testkit::free_port());
    ClusterClient::new(cluster.channel(0))
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![format!("https://{peer}")],
            is_learner: true,
        })
        .await
        .unwrap();
    let log = dir.path().join("newcomer.log");
    let initial = format!(
        "k1=https://{},newcomer=https://{peer}",
        cluster.members[0].spec.peer
    );
    let mut newcomer = Command::new(keel())
        .args([
            "serve",
            "--name",
            "newcomer",
            "--initial-cluster-state",
            "existing",
        ])
        .args([
            "--log-level",
            "info,keel=debug",
            "--initial-cluster",
            &initial,
        ])
        .arg(format!(
            "--data-dir={}",
            dir.path().join("newcomer").display()
        ))
        .arg(format!(
            "--listen-client-urls=http://127.0.0.1:{}",
            keel_testkit::free_port()
        ))
        .arg(format!("--listen-peer-url=https://{peer}"))
        .args(port_flags("peer-", &ca.cert, &rogue))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still_trying = newcomer.try_wait().unwrap().is_none();
    let _ = newcomer.kill();
    let _ = newcomer.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(still_trying, "{log}");
    assert!(log.contains("cannot ask a member to join through"), "{log}");
    assert!(!log.contains("joining the cluster"), "{log}");
    cluster.assert_running();
}

#[test]
fn a_missing_or_unusable_certificate_file_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let issued = ca.issue(dir.path(), "member");
    let serve = |cert: &Path, key: &Path| {
        let out = Command::new(keel())
            .args(["serve", "--listen-client-urls=https://127.0.0.1:0"])
            .arg(format!(
                "--listen-peer-url=http://127.0.0.1:{}",
                keel_testkit::free_port()
            ))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--cert-file={}", cert.display()))
            .arg(format!("--key-file={}", key.display()))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("missing.pem");
    let err = serve(&missing, &issued.key);
    assert!(
        err.contains(&format!("reading certificate file {}", missing.display())),
        "{err}"
    );
    let err = serve(&issued.cert, &issued.cert);
    assert!(
        err.contains(&format!(
            "{} holds no PEM private key",
            issued.cert.display()
        )),
        "{err}"
    );
}

/// With client certificate auth and auth on, a certificate's Common Name
/// is the user (when no token is sent), as in etcd; a user added without a
/// password logs in only so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificates_common_name_is_the_user_once_auth_is_on() {
    use keel_api::authpb::{permission::Type, Permission, UserAddOptions};
    use keel_api::etcdserverpb::auth_client::AuthClient;
    use keel_api::etcdserverpb::*;

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let member = ca.issue(dir.path(), "member");
    let root = ca.issue(dir.path(), "root");
    let alice = ca.issue(dir.path(), "alice");
    let stranger = ca.issue(dir.path(), "mallory");
    let as_user = |issued: &Issued| Some(client_tls(&ca.cert, Some(issued)));
    let cluster = start(
        Tls {
            client: as_user(&root),
            peer: false,
        },
        |_| port_flags("", &ca.cert, &member),
    );
    cluster.wait_for_leader().await;
    let address = cluster.members[0].spec.client.clone();
    let mut auth = AuthClient::new(channel(&address, as_user(&root)).await.unwrap());
    let no_password = Some(UserAddOptions { no_password: true });
    for name in ["root", "alice"] {
        auth.user_add(AuthUserAddRequest {
            name: name.into(),
            options: no_password,
            ..Default::default()
        })
        .await
        .unwrap();
        auth.role_add(AuthRoleAddRequest { name: name.into() })
            .await
            .unwrap();
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: name.into(),
            role: name.into(),
        })
        .await
        .unwrap();
    }
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "alice".into(),
        perm: Some(Permission {
            perm_type: Type::Read as i32,
            key: "a/".as_bytes().to_vec().into(),
            range_end: "a0".as_bytes().to_vec().into(),
        }),
    })
    .await
    .unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();

    // Root by its certificate, with no token.
    put(&address, as_user(&root), "a/1", "x")
        .await
        .expect("root writes");
    // alice reads her prefix, and may not write.
    let alice_tls = client_tls(&ca.cert, Some(&alice));
    assert_eq!(get(&address, alice_tls, "a/1").await.as_deref(), Some("x"));
    let refused = put(&address, as_user(&alice), "a/2", "y")
        .await
        .unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    // A certificate of no user is refused.
    let refused = put(&address, as_user(&stranger), "a/3", "z")
        .await
        .unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    // A user without a password cannot log in with one.
    let login = auth
        .authenticate(AuthenticateRequest {
            name: "alice".into(),
            password: String::new(),
        })
        .await
        .unwrap_err();
    assert!(login.message().contains("authentication failed"), "{login}");
}
