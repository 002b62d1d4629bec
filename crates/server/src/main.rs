mod rpc;
fn main() {}
