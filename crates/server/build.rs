//! Generates the etcd v3 gRPC services (clients and servers) from
//! proto/etcd/rpc.proto, and keel's member-to-member `Forward` service from
//! proto/etcd/command.proto, with protox (no protoc); the messages
//! themselves come from keel-mvcc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/etcd");
    let fds = protox::compile(["rpc.proto", "command.proto"], ["../../proto/etcd"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .extern_path(".etcdserverpb", "::keel_mvcc::pb::etcdserverpb")
        .extern_path(".mvccpb", "::keel_mvcc::pb::mvccpb")
        .extern_path(".keelpb", "::keel_mvcc::pb::keelpb")
        .compile_fds(fds)?;
    Ok(())
}
