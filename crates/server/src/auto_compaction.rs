//! Compacting history automatically, as etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention` do: the leader proposes a `Compact` that
//! keeps either the last stretch of time or the last number of revisions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keel_mvcc::pb::etcdserverpb::CompactionRequest;
use keel_mvcc::pb::keelpb::{command::Op, Command as CommandPb};
use tokio::time::Instant;

use crate::backend::Backend;

/// How much history automatic compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// The revisions of the last this long.
    Periodic(Duration),
    /// The last this many revisions.
    Revision(i64),
}

impl Retention {
    /// Parses etcd's mode (`periodic` or `revision`) and retention: for
    /// `periodic` a duration (`90s`, `30m`, `1h`; a bare number is hours),
    /// for `revision` a count. `None` when the retention is zero (off).
    pub fn parse(mode: &str, retention: &str) -> anyhow::Result<Option<Retention>> {
        let retention = retention.trim();
        let policy = match mode {
            "periodic" => Retention::Periodic(parse_duration(retention)?),
            "revision" => Retention::Revision(
                retention
                    .parse()
                    .with_context(|| format!("`{retention}` is not a number of revisions"))?,
            ),
            other => bail!("must be `periodic` or `revision`, not `{other}`"),
        };
        Ok(match policy {
            Retention::Periodic(d) if d.is_zero() => None,
            Retention::Revision(n) if n <= 0 => None,
            policy => Some(policy),
        })
    }

    /// How often the leader looks: a tenth of the period (at least 100 ms),
    /// or every five minutes when keeping revisions.
    fn interval(self) -> Duration {
        match self {
            Retention::Periodic(period) => (period / 10).max(Duration::from_millis(100)),
            Retention::Revision(_) => Duration::from_secs(300),
        }
    }
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "h"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 90s, 30m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("`{text}` is not a duration like 90s, 30m or 1h"),
    };
    Ok(Duration::from_secs(seconds))
}

/// What the leader has seen: the store's revision at each look, for the
/// periodic mode.
struct Compactor {
    retention: Retention,
    seen: VecDeque<(Instant, i64)>,
}

impl Compactor {
    fn new(retention: Retention) -> Compactor {
        Compactor {
            retention,
            seen: VecDeque::new(),
        }
    }

    /// Records a look at `revision` and returns the revision to compact at,
    /// if it is past `compacted`.
    fn look(&mut self, now: Instant, revision: i64, compacted: i64) -> Option<i64> {
        let target = match self.retention {
            Retention::Revision(keep) => revision - keep,
            Retention::Periodic(period) => {
                self.seen.push_back((now, revision));
                // The newest revision seen at least a period ago.
                let mut target = 0;
                while let Some(&(at, seen)) = self.seen.front() {
                    if now.duration_since(at) < period {
                        break;
                    }
                    target = seen;
                    self.seen.pop_front();
                }
                target
            }
        };
        (target > compacted).then_some(target)
    }

    /// Forgets what was seen (leadership was lost: the next leader's view
    /// starts afresh, as etcd's does).
    fn reset(&mut self) {
        self.seen.clear();
    }
}

/// On the leader: compacts history by `retention`. Runs until the node
/// stops.
pub async fn auto_compact(backend: Arc<Backend>, retention: Retention) {
    let mut compactor = Compactor::new(retention);
    let mut ticker = tokio::time::interval(retention.interval());
    loop {
        ticker.tick().await;
        if !backend.node.status().running {
            return;
        }
        if !backend.is_leader() {
            compactor.reset();
            continue;
        }
        let store = &backend.store;
        let Some(revision) =
            compactor.look(Instant::now(), store.revision(), store.compact_revision())
        else {
            continue;
        };
        let command = CommandPb {
            op: Some(Op::Compact(CompactionRequest {
                revision,
                physical: false,
            })),
        };
        match backend.write(command).await {
            Ok(_) => tracing::info!(revision, "auto-compacted"),
            Err(status) => tracing::debug!(revision, %status, "auto-compaction deferred"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_like_etcd() {
        let parse = Retention::parse;
        assert_eq!(
            parse("periodic", "1").unwrap(),
            Some(Retention::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse("periodic", "30m").unwrap(),
            Some(Retention::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse("periodic", "90s").unwrap(),
            Some(Retention::Periodic(Duration::from_secs(90)))
        );
        assert_eq!(parse("periodic", "0").unwrap(), None);
        assert_eq!(
            parse("revision", "1000").unwrap(),
            Some(Retention::Revision(1000))
        );
        assert_eq!(parse("revision", "0").unwrap(), None);
        for (mode, retention) in [
            ("periodic", "1d"),
            ("periodic", "h"),
            ("periodic", "-5m"),
            ("revision", "10m"),
            ("hourly", "1"),
        ] {
            assert!(parse(mode, retention).is_err(), "{mode} {retention}");
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions() {
        let mut compactor = Compactor::new(Retention::Revision(100));
        let now = Instant::now();
        assert_eq!(compactor.look(now, 50, 0), None);
        assert_eq!(compactor.look(now, 150, 0), Some(50));
        assert_eq!(compactor.look(now, 150, 50), None);
        assert_eq!(compactor.look(now, 400, 50), Some(300));
    }

    #[test]
    fn periodic_mode_compacts_to_what_was_current_a_period_ago() {
        let period = Duration::from_secs(60);
        let mut compactor = Compactor::new(Retention::Periodic(period));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(compactor.look(at(0), 10, 0), None);
        assert_eq!(compactor.look(at(30), 20, 0), None);
        // A minute after the first look: what was current then.
        assert_eq!(compactor.look(at(60), 30, 0), Some(10));
        assert_eq!(compactor.look(at(70), 40, 10), None);
        assert_eq!(compactor.look(at(95), 50, 10), Some(20));
        // Nothing new to compact: no proposal.
        assert_eq!(compactor.look(at(200), 50, 50), None);
        compactor.reset();
        assert_eq!(compactor.look(at(300), 60, 50), None);
    }
}
