//! Generates the etcd v3 API (proto/etcd/kv.proto: `mvccpb`, rpc.proto:
//! `etcdserverpb`, v3lock.proto and v3election.proto: etcd's lock and
//! election services) and keel's own messages and member-to-member service
//! (command.proto: `keelpb`), messages and gRPC clients and servers alike,
//! with protox: pure Rust, no protoc needed. etcd's packages also get the
//! protobuf JSON mapping (pbjson: serde implementations) for the JSON
//! gateway, with the original field names on output as etcd's gateway
//! writes them; either name is accepted on input.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/etcd");
    let fds = protox::compile(
        [
            "kv.proto",
            "auth.proto",
            "rpc.proto",
            "command.proto",
            "v3lock.proto",
            "v3election.proto",
        ],
        ["../../proto/etcd"],
    )?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
