//! `keel`: an etcd-compatible metadata store on keel-raft.
//!
//! `keel serve` runs a member; `keel cluster` runs three on this machine;
//! the other subcommands are a small client (etcdctl works too).

mod api;
mod auth;
mod cli;
mod cluster;
mod config;
mod coordination;
mod core;
mod identity;
mod leases;
mod logging;
mod metrics;
mod server;
mod tasks;
mod tls;
mod watch;

use cli::{bench, client, local_cluster, snapshot};

use clap::{Parser, Subcommand};

/// mimalloc: per-thread free lists where glibc's malloc takes an arena lock
/// (which the watch fan-out and the put path contend on), and less
/// fragmentation under many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them, and each fresh page the allocator touched then cost the kernel a
/// zeroed 2 MiB page: a profile of the put path found a quarter of the
/// members' CPU in `clear_page_erms`, and without them a put costs about
/// 30% less CPU (docs/benchmarks.md).
fn no_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers and touches none of
    // our memory; if the kernel refuses, pages stay as they were.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// keel: an etcd-compatible metadata store.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a member (a single-node store by default: data in ./keel-data,
    /// clients on 127.0.0.1:2379, peers on 127.0.0.1:2380).
    Serve(Box<ServeArgs>),
    /// Run a three-member cluster on this machine, for trying fail-over by hand.
    Cluster(local_cluster::ClusterArgs),
    /// Backups: `keel snapshot status BACKUP`.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Load etcd v3 endpoints and report ops/s and latency (etcd's `benchmark`).
    Bench(Box<bench::BenchArgs>),
    /// Client commands against a running cluster.
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A TOML config file (see keel.example.toml); flags override its keys.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    settings: config::Settings,
}

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Cluster(args) => local_cluster::run(args),
        Command::Snapshot(command) => snapshot::run(command),
        Command::Bench(args) => bench::run(*args),
        Command::Client(command) => client::run(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::Settings::from_file(path)?,
        None => config::Settings::default(),
    };
    let config = config::Config::resolve(file.overlaid_with(args.settings))?;
    let _logs = logging::init(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(server::run(config, shutdown_signal()))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    /// clap's own checks of every subcommand (two arguments with one
    /// name, a `requires` naming nothing, ...), which otherwise only fire
    /// when that subcommand runs.
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
