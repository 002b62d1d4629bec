//! `keel lease`, `keel lock` and `keel elect`: leases and what is built on
//! them, printed the way etcdctl prints them.

use std::time::Duration;

use anyhow::Context;
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};
use keel_api::v3electionpb::election_client::ElectionClient;
use keel_api::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use keel_api::v3lockpb::lock_client::LockClient;
use keel_api::v3lockpb::{LockRequest, UnlockRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{connect, Conn, Connection};

/// Lease commands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum LeaseCommand {
    /// Grant a lease of `ttl` seconds.
    Grant {
        #[command(flatten)]
        connection: Connection,
        ttl: i64,
    },
    /// Revoke a lease (hex id), deleting its keys.
    Revoke {
        #[command(flatten)]
        connection: Connection,
        id: String,
    },
    /// Keep a lease (hex id) alive until interrupted.
    KeepAlive {
        #[command(flatten)]
        connection: Connection,
        id: String,
        /// One keep-alive, then exit.
        #[arg(long)]
        once: bool,
    },
    /// A lease's time left.
    Timetolive {
        #[command(flatten)]
        connection: Connection,
        id: String,
        /// List the keys attached too.
        #[arg(long)]
        keys: bool,
    },
    /// Every lease.
    List {
        #[command(flatten)]
        connection: Connection,
    },
}

fn parse_id(id: &str) -> anyhow::Result<i64> {
    i64::from_str_radix(id, 16).with_context(|| format!("`{id}` is not a hex lease id"))
}

/// Runs a lease command.
pub(crate) async fn lease_command(command: LeaseCommand) -> anyhow::Result<()> {
    match command {
        LeaseCommand::Grant { connection, ttl } => {
            let mut leases = LeaseClient::new(connect(&connection).await?);
            let granted = leases
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await?
                .into_inner();
            println!(
                "lease {:016x} granted with TTL({}s)",
                granted.id, granted.ttl
            );
        }
        LeaseCommand::Revoke { connection, id } => {
            let id = parse_id(&id)?;
            let mut leases = LeaseClient::new(connect(&connection).await?);
            leases.lease_revoke(LeaseRevokeRequest { id }).await?;
            println!("lease {id:016x} revoked");
        }
        LeaseCommand::KeepAlive {
            connection,
            id,
            once,
        } => {
            let id = parse_id(&id)?;
            let channel = connect(&connection).await?;
            keep_alive(channel, id, once, true).await?;
        }
        LeaseCommand::Timetolive {
            connection,
            id,
            keys,
        } => {
            let id = parse_id(&id)?;
            let mut leases = LeaseClient::new(connect(&connection).await?);
            let lease = leases
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                .await?
                .into_inner();
            if lease.ttl == -1 {
                println!("lease {id:016x} already expired");
                return Ok(());
            }
            let mut line = format!(
                "lease {id:016x} granted with TTL({}s), remaining({}s)",
                lease.granted_ttl, lease.ttl
            );
            if keys {
                let names: Vec<String> = lease
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                line.push_str(&format!(", attached keys([{}])", names.join(" ")));
            }
            println!("{line}");
        }
        LeaseCommand::List { connection } => {
            let mut leases = LeaseClient::new(connect(&connection).await?);
            let all = leases
                .lease_leases(LeaseLeasesRequest {})
                .await?
                .into_inner()
                .leases;
            println!("found {} leases", all.len());
            for lease in all {
                println!("{:x}", lease.id);
            }
        }
    }
    Ok(())
}

/// Keeps lease `id` alive, a third of its TTL apart, printing each answer
/// when `print`; returns once the lease is gone (or after one, `once`).
async fn keep_alive(channel: Conn, id: i64, once: bool, print: bool) -> anyhow::Result<()> {
    let (requests, request_stream) = mpsc::channel(1);
    let mut answers = LeaseClient::new(channel)
        .lease_keep_alive(ReceiverStream::new(request_stream))
        .await?
        .into_inner();
    loop {
        requests.send(LeaseKeepAliveRequest { id }).await?;
        let Some(answer) = answers.message().await? else {
            anyhow::bail!("the keep-alive stream ended");
        };
        if answer.ttl <= 0 {
            anyhow::bail!("lease {id:016x} expired or revoked.");
        }
        if print {
            println!("lease {id:016x} keepalived with TTL({})", answer.ttl);
        }
        if once {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs((answer.ttl / 3).max(1) as u64)).await;
    }
}

/// A lease of `ttl` seconds kept alive in the background while the caller
/// holds what it is attached to.
async fn session(channel: &Conn, ttl: i64) -> anyhow::Result<i64> {
    let id = LeaseClient::new(channel.clone())
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await?
        .into_inner()
        .id;
    let channel = channel.clone();
    tokio::spawn(async move {
        if let Err(e) = keep_alive(channel, id, false, false).await {
            eprintln!("{e}");
            std::process::exit(1);
        }
    });
    Ok(id)
}

/// Takes lock `name`, prints its key, then runs `command` and releases it
/// (or, with no command, holds it until interrupted).
pub(crate) async fn lock(
    connection: Connection,
    name: String,
    ttl: i64,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let channel = connect(&connection).await?;
    let lease = session(&channel, ttl).await?;
    let mut locks = LockClient::new(channel.clone());
    let key = locks
        .lock(LockRequest {
            name: name.into(),
            lease,
        })
        .await?
        .into_inner()
        .key;
    let status = if let Some((program, args)) = command.split_first() {
        let (program, args) = (program.clone(), args.to_vec());
        let run = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&program)
                .args(&args)
                .status()
                .with_context(|| format!("running {program}"))
        });
        Some(run.await??)
    } else {
        println!("{}", String::from_utf8_lossy(&key));
        tokio::signal::ctrl_c().await?;
        None
    };
    locks.unlock(UnlockRequest { key }).await?;
    LeaseClient::new(channel)
        .lease_revoke(LeaseRevokeRequest { id: lease })
        .await?;
    if let Some(status) = status.filter(|s| !s.success()) {
        anyhow::bail!("the command exited with {status}");
    }
    Ok(())
}

/// Campaigns in election `name` with `proposal`, prints the leader's key
/// and value once elected and leads until interrupted; with `listen`,
/// prints every leader instead.
pub(crate) async fn elect(
    connection: Connection,
    name: String,
    proposal: Option<String>,
    listen: bool,
    ttl: i64,
) -> anyhow::Result<()> {
    let channel = connect(&connection).await?;
    let mut election = ElectionClient::new(channel.clone());
    if listen {
        let mut leaders = election
            .observe(LeaderRequest { name: name.into() })
            .await?
            .into_inner();
        while let Some(leader) = leaders.message().await? {
            if let Some(kv) = leader.kv {
                println!("{}", String::from_utf8_lossy(&kv.key));
                println!("{}", String::from_utf8_lossy(&kv.value));
            }
        }
        return Ok(());
    }
    let proposal = proposal.context("give a proposal, or --listen")?;
    let lease = session(&channel, ttl).await?;
    let elected = election
        .campaign(CampaignRequest {
            name: name.into(),
            lease,
            value: proposal.clone().into(),
        })
        .await?
        .into_inner()
        .leader
        .context("elected without a leader key")?;
    println!("{}", String::from_utf8_lossy(&elected.key));
    println!("{proposal}");
    tokio::signal::ctrl_c().await?;
    election
        .resign(ResignRequest {
            leader: Some(elected),
        })
        .await?;
    LeaseClient::new(channel)
        .lease_revoke(LeaseRevokeRequest { id: lease })
        .await?;
    Ok(())
}
