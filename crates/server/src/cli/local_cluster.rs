//! `keel cluster`: three members on this machine (clients on 2379, 22379
//! and 32379, as etcd's Procfile), for trying fail-over by hand. Each member
//! is a `keel serve` child process; stop one with `kill <pid>` and start it
//! again with the command line printed for it.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use keel_testkit::{initial_cluster, Flavor, MemberSpec};

/// Options of `keel cluster`.
#[derive(clap::Args, Debug)]
pub(crate) struct ClusterArgs {
    /// Where the members keep their data (one directory each).
    #[arg(long, default_value = "keel-cluster-data")]
    data_dir: PathBuf,
    /// Start from empty data directories.
    #[arg(long)]
    fresh: bool,
}

/// The three members: name, client port, peer port.
const MEMBERS: [(&str, u16, u16); 3] = [
    ("keel1", 2379, 2380),
    ("keel2", 22379, 22380),
    ("keel3", 32379, 32380),
];

/// Where member `i` listens and keeps its data.
fn member(args: &ClusterArgs, i: usize) -> MemberSpec {
    let (name, client, peer) = MEMBERS[i];
    MemberSpec {
        name: name.into(),
        client: format!("127.0.0.1:{client}"),
        peer: format!("127.0.0.1:{peer}"),
        data_dir: args.data_dir.join(name),
    }
}

/// Runs the cluster until SIGINT/SIGTERM, then stops every member cleanly.
pub(crate) fn run(args: ClusterArgs) -> anyhow::Result<()> {
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("removing {}", args.data_dir.display()))?;
    }
    let exe = std::env::current_exe().context("finding the keel binary")?;
    let members: Vec<MemberSpec> = (0..MEMBERS.len()).map(|i| member(&args, i)).collect();
    let initial = initial_cluster(&members);
    let mut children: Vec<(String, Child)> = Vec::new();
    for spec in &members {
        let name = &spec.name;
        let serve = spec.args(Flavor::Keel, &initial, "keel-local-cluster");
        let child = Command::new(&exe)
            .args(&serve)
            .spawn()
            .with_context(|| format!("starting member {name}"))?;
        eprintln!(
            "member {name} (pid {}): {} {}",
            child.id(),
            exe.display(),
            serve.join(" ")
        );
        children.push((name.to_string(), child));
    }
    eprintln!(
        "\nclients: 127.0.0.1:2379, 127.0.0.1:22379, 127.0.0.1:32379. Try:\n  \
         etcdctl --endpoints=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 endpoint status -w table\n  \
         kill <pid of the leader>   # then watch another member take over\n\
         Ctrl-C stops every member.\n"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        let signal = crate::shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = poll.tick() => {
                    for (name, child) in &mut children {
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("member {name} exited ({status}); restart it with the command above");
                        }
                    }
                    children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
                }
            }
        }
    });
    for (_, child) in &children {
        // SIGTERM, so each member shuts down cleanly.
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for (name, mut child) in children {
        match child.wait() {
            Ok(status) => eprintln!("member {name} stopped ({status})"),
            Err(e) => eprintln!("member {name}: {e}"),
        }
    }
    Ok(())
}
