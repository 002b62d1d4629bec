//! `keel-sim`: runs seeded simulations of keel-raft clusters from the command line.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use keel_sim::fault_fs::FaultStats;
use keel_sim::{run, Scenario, SimOptions};

/// Run deterministic keel-raft cluster simulations with faults.
#[derive(Parser, Debug)]
#[command(name = "keel-sim", version)]
struct Args {
    /// Replay exactly this seed (with --verbose for a full trace).
    #[arg(long)]
    seed: Option<u64>,
    /// How many seeds to run (starting at --first-seed), when no --seed is given.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of the batch.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Cluster size; without --seed, batches alternate between 3 and 5.
    #[arg(long)]
    nodes: Option<u64>,
    /// Fault profile (calm, lossy, partitions, crashes, membership, chaos); without it,
    /// batches cycle through all of them.
    #[arg(long)]
    scenario: Option<Scenario>,
    /// Ticks of load under faults before the network heals.
    #[arg(long, default_value_t = 300)]
    fault_ticks: u64,
    /// Disk writes and syncs fail with EIO or ENOSPC now and then (on, off);
    /// without it, drawn from each seed.
    #[arg(long, value_parser = parse_on_off)]
    disk_errors: Option<bool>,
    /// Print every message and event.
    #[arg(long)]
    verbose: bool,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

fn options_for(args: &Args, seed: u64) -> SimOptions {
    let mut options = SimOptions::new(seed);
    options.nodes = args
        .nodes
        .unwrap_or(if seed.is_multiple_of(2) { 3 } else { 5 });
    options.scenario = args
        .scenario
        .unwrap_or(Scenario::ALL[(seed / 2 % Scenario::ALL.len() as u64) as usize]);
    options.fault_ticks = args.fault_ticks;
    options.disk_errors = args.disk_errors;
    options.verbose = args.verbose;
    options
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    let started = Instant::now();
    let (mut passed, mut failed) = (0u64, 0u64);
    let (mut commands, mut max_recovery, mut slowest_seed) = (0u64, 0u64, 0u64);
    let mut disk = FaultStats::default();
    for seed in seeds {
        match run(options_for(&args, seed)) {
            Ok(report) => {
                passed += 1;
                commands += report.commands;
                disk.add(&report.disk);
                if report.recovery_ticks >= max_recovery {
                    max_recovery = report.recovery_ticks;
                    slowest_seed = seed;
                }
                if args.seed.is_some() {
                    println!("{report:#?}");
                }
            }
            Err(failure) => {
                failed += 1;
                eprintln!("FAILED {failure}");
            }
        }
    }
    println!(
        "{passed} passed, {failed} failed ({commands} commands, slowest recovery {max_recovery} ticks \
         (seed {slowest_seed}), {:.1?})",
        started.elapsed()
    );
    println!(
        "disks: {} crashes ({} in a sync), {} unsynced bytes lost, {} torn writes ({} with zeros \
         or garbage), {} name changes lost, {} EIO, {} ENOSPC",
        disk.crashes,
        disk.crashes_in_sync,
        disk.lost_unsynced_bytes,
        disk.torn_writes,
        disk.garbage_tails,
        disk.lost_dir_ops,
        disk.eio,
        disk.enospc
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
