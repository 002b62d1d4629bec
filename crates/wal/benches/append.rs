//! WAL append throughput: entries/s and fsyncs/s for batches of 1, 64 and
//! 1024 entries of 256 bytes, each batch one `append` (one fdatasync).
//!
//! Run: `cargo bench -p keel-wal --bench append`. The log lives in a
//! temporary directory on the same disk as the system temp dir
//! (`TMPDIR` to choose another).

use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_raft::{Entry, HardState};
use keel_wal::{Wal, WalOptions};

fn main() {
    println!("keel-wal append bench: 256-byte entries, one fdatasync per batch");
    let payload = Bytes::from(vec![0xA5u8; 256]);
    for batch in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
        let mut next = 1u64;
        let started = Instant::now();
        let mut batches = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            let entries: Vec<Entry> = (next..next + batch)
                .map(|i| Entry::normal(1, i, payload.clone()))
                .collect();
            next += batch;
            let hs = HardState {
                term: 1,
                vote: Some(1),
                commit: next - 1,
            };
            wal.append(&entries, Some(hs)).expect("append");
            batches += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "batch {batch:>5}: {:>10.0} entries/s  {:>8.0} fsyncs/s  ({:.3} ms per batch, {} segments)",
            (batches * batch) as f64 / secs,
            wal.syncs() as f64 / secs,
            secs * 1000.0 / batches as f64,
            wal.segment_count()
        );
    }
}
