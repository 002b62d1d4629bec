//! The seeded simulation runs of `cargo test`: every scenario, 3 and 5 nodes.
//! Set `KEEL_SIM_SOAK=N` to run N seeds per scenario and size instead.

use keel_sim::{run, Scenario, SimOptions};

/// 6 scenarios × 2 sizes × 84 seeds: 1,008 runs.
const DEFAULT_SEEDS: u64 = 84;

fn seeds_per_size() -> u64 {
    std::env::var("KEEL_SIM_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEEDS)
}

/// Runs `seeds_per_size()` seeds of `scenario` on 3 and on 5 nodes; fails
/// listing every failing seed with the command that replays it.
fn run_scenario(scenario: Scenario) {
    let seeds = seeds_per_size();
    let mut failures = Vec::new();
    for nodes in [3, 5] {
        for seed in 0..seeds {
            let mut options = SimOptions::new(seed);
            options.nodes = nodes;
            options.scenario = scenario;
            if let Err(failure) = run(options) {
                failures.push(failure.to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs failed:\n{}",
        failures.len(),
        2 * seeds,
        failures.join("\n")
    );
}

#[test]
fn calm() {
    run_scenario(Scenario::Calm);
}

#[test]
fn lossy() {
    run_scenario(Scenario::Lossy);
}

#[test]
fn partitions() {
    run_scenario(Scenario::Partitions);
}

#[test]
fn crashes() {
    run_scenario(Scenario::Crashes);
}

#[test]
fn membership() {
    run_scenario(Scenario::Membership);
}

#[test]
fn chaos() {
    run_scenario(Scenario::Chaos);
}

/// Whether a run went through crashes, lost messages, reads and snapshots.
fn eventful(report: &keel_sim::RunReport) -> bool {
    report.applied > 0
        && report.crashes > 0
        && report.dropped > 0
        && report.reads > 0
        && report.snapshots_taken > 0
}

#[test]
fn a_seed_replays_identically() {
    // The first eventful seed from 42 on (a change to the core or the
    // simulator may make any one seed take another path).
    let options = (42..142)
        .map(|seed| {
            let mut options = SimOptions::new(seed);
            options.nodes = 5;
            options
        })
        .find(|options| run(options.clone()).is_ok_and(|r| eventful(&r)))
        .expect("an eventful seed among a hundred");
    let first = run(options.clone()).expect("it passes");
    let second = run(options).expect("it passes again");
    assert_eq!(first, second);
}
