//! Peers over TLS: `GrpcTransport::with_tls` on the sending side, tonic's
//! `ServerTlsConfig` with client-certificate auth on the receiving side. A
//! node whose certificate another CA signed gets no raft traffic through,
//! either way.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Add, Counters};
use keel_node::{GrpcTransport, NodeConfig, RaftNode, RaftService};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

const CLUSTER_ID: u64 = 42;

/// A certificate authority made for the test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for 127.0.0.1, good for serving and for connecting.
    fn issue(&self, name: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity::from_pem(cert.pem(), key.serialize_pem())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_talk_tls_and_a_node_of_another_ca_is_shut_out() {
    let good = Ca::new("good");
    let rogue = Ca::new("rogue");
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, listener);
    }
    let addresses: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();

    let mut nodes = BTreeMap::new();
    let mut servers = Vec::new();
    for (id, listener) in listeners {
        // Node 3's certificate comes from another CA; it trusts the good one.
        let identity = if id == 3 { &rogue } else { &good }.issue(&format!("node-{id}"));
        let client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&good.pem))
            .identity(identity.clone());
        let transport =
            GrpcTransport::new(CLUSTER_ID, addresses.clone()).with_tls(move || client.clone());
        let mut config = NodeConfig::new(id, dir.path().join(id.to_string()));
        config.initial_members = addresses.clone();
        config.tick_interval = Duration::from_millis(10);
        let node = RaftNode::start(config, Counters::default(), transport).unwrap();
        let tls = ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(&good.pem));
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(RaftService::new(CLUSTER_ID, node.inbox()).into_server())
            .serve_with_incoming(TcpIncoming::from(listener));
        servers.push(tokio::spawn(server));
        nodes.insert(id, node);
    }

    // Nodes 1 and 2 are a quorum of three: they elect and commit over TLS.
    let leader = nodes[&1]
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("nodes 1 and 2 elect a leader over TLS");
    assert_ne!(leader, 3, "the rogue node cannot lead");
    for _ in 0..10 {
        nodes[&1].propose(Add("k".into(), 1)).await.unwrap();
    }
    assert_eq!(
        nodes[&2].read(|c| c.0.get("k").copied()).await.unwrap(),
        Some(10)
    );

    // Node 3 heard nothing: neither its sends nor the leader's got through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shut_out = nodes[&3].status();
    assert_eq!(shut_out.leader, None, "{shut_out:?}");
    assert!(
        shut_out.commit <= 1,
        "only its bootstrap entry: {shut_out:?}"
    );
    assert!(nodes[&1].status().term == nodes[&2].status().term);

    for node in nodes.values() {
        node.stop().await;
    }
    for server in servers {
        server.abort();
    }
}
