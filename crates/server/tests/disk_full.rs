//! A member whose disk fills up: its data directory on a small tmpfs,
//! filled to the last byte by a ballast file while clients write. Writes
//! must be refused with a clear error, reads must keep working, nothing
//! acknowledged may be lost, and once the ballast is deleted the member
//! takes writes again by itself. Needs to mount a tmpfs (root, as on the
//! machines keel's CI runs on).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::*;
use keel_testkit::{Cluster, Flavor, Tls};

/// A tmpfs of a fixed size, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, megabytes: u32) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root to: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes zeros into `path` until the filesystem refuses more.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // Then byte by byte-ish, so not even a small write fits.
    let small = [0u8; 512];
    while let Ok(n) = file.write(&small) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    written
}

/// `call`'s answer, or a deadline error after 5 s.
async fn within_5s<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer within 5 s"))?
        .map(tonic::Response::into_inner)
}

async fn put(
    kv: &mut KvClient<tonic::transport::Channel>,
    key: &str,
    value: Bytes,
) -> Result<i64, tonic::Status> {
    let answer = within_5s(kv.put(PutRequest {
        key: Bytes::from(key.to_string()),
        value,
        ..Default::default()
    }))
    .await?;
    Ok(answer.header.map_or(0, |h| h.revision))
}

async fn get(
    kv: &mut KvClient<tonic::transport::Channel>,
    key: &str,
    serializable: bool,
) -> Result<Option<Bytes>, tonic::Status> {
    let answer = within_5s(kv.range(RangeRequest {
        key: Bytes::from(key.to_string()),
        serializable,
        ..Default::default()
    }))
    .await?;
    Ok(answer.kvs.first().map(|kv| kv.value.clone()))
}

/// One member with its data on a fresh tmpfs of `megabytes`, given
/// `extra` flags, and 50 acknowledged 4 KiB puts (`before/N`).
async fn member_on_a_small_disk(
    dir: &Path,
    megabytes: u32,
    extra: &[&str],
) -> (
    SmallDisk,
    Cluster,
    KvClient<tonic::transport::Channel>,
    Vec<String>,
) {
    let disk = SmallDisk::mount(&dir.join("disk"), megabytes);
    let exe = Path::new(env!("CARGO_BIN_EXE_keel"));
    let mut args = vec![
        "--heartbeat-interval-ms",
        "50",
        "--election-timeout-ms",
        "500",
    ];
    args.extend_from_slice(extra);
    let mut cluster = Cluster::prepare(Flavor::Keel, exe, 1, &args, Tls::default());
    cluster.members[0].spec.data_dir = disk.path.join("data");
    cluster.spawn(0);
    cluster.wait_for_leader().await;
    let mut kv = KvClient::new(cluster.channel(0));
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let key = format!("before/{i}");
        put(&mut kv, &key, value()).await.expect("a put with room");
        acknowledged.push(key);
    }
    (disk, cluster, kv, acknowledged)
}

/// Every value the tests write.
fn value() -> Bytes {
    Bytes::from(vec![b'v'; 4096])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, mut cluster, mut kv, mut acknowledged) =
        member_on_a_small_disk(dir.path(), 160, &[]).await;
    let value = value();

    // The ballast takes every byte left; writes fail, clearly.
    let ballast = disk.path.join("ballast");
    fill(&ballast);
    let mut refusals = Vec::new();
    let started = Instant::now();
    while refusals.len() < 5 && started.elapsed() < Duration::from_secs(60) {
        let key = format!("full/{}", refusals.len() + acknowledged.len());
        match put(&mut kv, &key, value.clone()).await {
            Ok(_) => acknowledged.push(key),
            Err(status) => refusals.push(status),
        }
    }
    assert!(
        refusals.len() >= 5,
        "the member kept taking writes on a full disk: {} acknowledged",
        acknowledged.len()
    );
    for status in &refusals {
        let message = status.message().to_lowercase();
        if !(message.contains("space") || message.contains("disk")) {
            cluster.dump_logs();
        }
        assert!(
            message.contains("space") || message.contains("disk"),
            "a write on a full disk was refused without saying why: {status:?}"
        );
    }
    cluster.assert_running();

    // Reads keep working, serializable and linearizable.
    for key in &acknowledged {
        for serializable in [true, false] {
            let read = get(&mut kv, key, serializable).await;
            assert_eq!(
                read.as_ref().ok().and_then(|v| v.as_ref()),
                Some(&value),
                "reading {key} (serializable: {serializable}) on a full disk: {read:?}"
            );
        }
    }

    // Space returns: the member takes writes again by itself.
    std::fs::remove_file(&ballast).unwrap();
    let started = Instant::now();
    let recovered = loop {
        match put(&mut kv, "after/0", value.clone()).await {
            Ok(_) => break true,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => {
                eprintln!("still refused: {e:?}");
                break false;
            }
        }
    };
    assert!(
        recovered,
        "the member did not take writes once space returned"
    );
    acknowledged.push("after/0".into());

    // Nothing acknowledged is lost, across a restart too.
    assert_eq!(cluster.stop(0), Some(0), "a clean stop");
    cluster.spawn(0);
    cluster.wait_for_leader().await;
    let mut kv = KvClient::new(cluster.channel(0));
    for key in &acknowledged {
        assert_eq!(
            get(&mut kv, key, false).await.ok().flatten().as_ref(),
            Some(&value),
            "{key} was acknowledged and is lost"
        );
    }
    cluster.assert_running();
    drop(cluster);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_write_its_log_stops_and_restarts_with_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // No reserve: the log itself meets the full disk.
    let (disk, mut cluster, mut kv, mut acknowledged) =
        member_on_a_small_disk(dir.path(), 96, &["--min-free-disk-bytes", "0"]).await;
    let value = value();
    let ballast = disk.path.join("ballast");
    fill(&ballast);
    for i in 0..20 {
        let key = format!("full/{i}");
        if put(&mut kv, &key, value.clone()).await.is_ok() {
            acknowledged.push(key);
        }
    }
    // The member stopped, saying why, rather than serving without its log.
    let mut child = cluster.members[0].process.take().expect("started");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the member kept running without its log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status}");
    let log = cluster.log(0);
    assert!(log.contains("No space left on device"), "{log}");

    // Space returns; restarted, it has everything it acknowledged.
    std::fs::remove_file(&ballast).unwrap();
    cluster.spawn(0);
    cluster.wait_for_leader().await;
    let mut kv = KvClient::new(cluster.channel(0));
    for key in &acknowledged {
        assert_eq!(
            get(&mut kv, key, false).await.ok().flatten().as_ref(),
            Some(&value),
            "{key} was acknowledged and is lost"
        );
    }
    put(&mut kv, "after", value.clone())
        .await
        .expect("a put after the restart");
    cluster.assert_running();
    drop(cluster);
    drop(disk);
}
