//! Compacting history automatically, as etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention` do: the leader proposes a `Compact` that
//! keeps either the last stretch of time or the last number of revisions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use keel_api::etcdserverpb::CompactionRequest;
use keel_api::keelpb::{command::Op, Command as CommandPb};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Retention;
use crate::core::Core;

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
}

/// On the leader: compacts history by `retention`. Runs until `stop` (the
/// end of this member's term as leader: the next leader's view starts
/// afresh, as etcd's does).
pub(crate) async fn auto_compact(core: Arc<Core>, retention: Retention, stop: CancellationToken) {
    let mut compactor = Compactor::new(retention);
    let mut ticker = tokio::time::interval(interval(retention));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let store = &core.store;
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
            auth: None,
        };
        match core.write(command).await {
            Ok(_) => tracing::info!(revision, "auto-compacted"),
            Err(e) => tracing::debug!(revision, error = %e, "auto-compaction deferred"),
        }
    }
}

/// How often the leader looks: a tenth of the period (at least 100 ms),
/// or every five minutes when keeping revisions.
fn interval(retention: Retention) -> Duration {
    match retention {
        Retention::Periodic(period) => (period / 10).max(Duration::from_millis(100)),
        Retention::Revision(_) => Duration::from_secs(300),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
