//! The cluster scenarios over gRPC on loopback.

mod common;

use common::Net;

all_scenarios!(Grpc);

/// Peers speaking nonsense are refused and the node keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_and_the_cluster_keeps_working() {
    use keel_node::codec::pb;
    use tokio::io::AsyncWriteExt;

    let c = common::Cluster::new(Net::Grpc, 3, 0, 10_000).await;
    assert_eq!(c.add("k", 1).await, 1);
    let target = c.addresses[&1].clone();

    // Raw garbage on the gRPC port.
    let mut raw = tokio::net::TcpStream::connect(&target).await.unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\x01\x02garbage")
        .await
        .unwrap();
    drop(raw);

    let mut client =
        pb::raft_transport_client::RaftTransportClient::connect(format!("http://{target}"))
            .await
            .unwrap();
    // A batch for another cluster is refused outright.
    let foreign = pb::MessageBatch {
        cluster_id: 999,
        messages: vec![],
        from_address: String::new(),
    };
    let err = client
        .stream(tokio_stream::iter(vec![foreign]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Malformed messages (no body; a vote without a log position; a message
    // for another node) are dropped one by one.
    let junk = pb::MessageBatch {
        cluster_id: 42,
        from_address: String::new(),
        messages: vec![
            pb::Message {
                from: 2,
                to: 1,
                term: 99,
                body: None,
            },
            pb::Message {
                from: 2,
                to: 1,
                term: 99,
                body: Some(pb::message::Body::Vote(pb::VoteRequest {
                    pre_vote: false,
                    last: None,
                    transfer: false,
                })),
            },
            pb::Message {
                from: 2,
                to: 7,
                term: 99,
                body: Some(pb::message::Body::TimeoutNow(pb::TimeoutNow {})),
            },
        ],
    };
    client.stream(tokio_stream::iter(vec![junk])).await.unwrap();

    assert_eq!(c.add("k", 1).await, 2);
    for id in 1..=3 {
        assert_eq!(c.read(id, "k").await, Some(2));
    }
    assert!(c.nodes.values().all(|n| n.status().running));
    assert!(
        c.nodes.values().all(|n| n.status().term < 99),
        "no junk term was taken"
    );
}
