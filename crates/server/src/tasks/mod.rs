//! Background work with an owner. Every task is spawned through [`Tasks`],
//! told to stop through a cancellation token, and awaited at shutdown.
//! Leader-only work ([`Tasks::spawn_while_leader`]) runs only while this
//! member leads: it is started when leadership is won and stopped when it
//! is lost, so no task polls for leadership itself.

pub(crate) mod auto_compaction;
pub(crate) mod health;
pub(crate) mod history;
pub(crate) mod lease_expiry;
pub(crate) mod node_metrics;
pub(crate) mod peer_rtt;
pub(crate) mod promotion;
pub(crate) mod publish;

use std::future::Future;
use std::time::Duration;

use keel_node::{Role, Status};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why a leader task's run ended.
enum Ended {
    /// The member is shutting down.
    Shutdown,
    /// This member no longer leads (or the node stopped).
    LeadershipLost,
    /// The task returned (or panicked) while this member led.
    ByItself,
}

/// The background tasks of one member.
pub(crate) struct Tasks {
    running: JoinSet<()>,
    stop: CancellationToken,
}

impl Tasks {
    /// No tasks yet.
    pub(crate) fn new() -> Self {
        Tasks {
            running: JoinSet::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Runs `task` until it ends or shutdown; it is handed the token that
    /// says when to stop.
    pub(crate) fn spawn<F>(&mut self, name: &'static str, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let work = task(self.stop.clone());
        self.running.spawn(async move {
            work.await;
            tracing::debug!(task = name, "background task ended");
        });
    }

    /// Runs a fresh `task` each time this member becomes leader (as `status`
    /// tells), and stops it (cancels its token and waits for it) when
    /// leadership is lost, the node stops, or at shutdown.
    pub(crate) fn spawn_while_leader<F>(
        &mut self,
        name: &'static str,
        mut status: watch::Receiver<Status>,
        task: impl Fn(CancellationToken) -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.running.spawn(async move {
            loop {
                let leads = |s: &Status| s.running && s.role == Role::Leader;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    won = status.wait_for(|s| leads(s) || !s.running) => match won {
                        Ok(s) if leads(&s) => {}
                        _ => return,
                    },
                }
                tracing::debug!(task = name, "leading: task started");
                let term = stop.child_token();
                let mut work = tokio::spawn(task(term.clone()));
                let (ended, finished) = tokio::select! {
                    _ = stop.cancelled() => (Ended::Shutdown, None),
                    _ = status.wait_for(|s| !leads(s)) => (Ended::LeadershipLost, None),
                    result = &mut work => (Ended::ByItself, Some(result)),
                };
                term.cancel();
                // A finished task's handle must not be awaited again.
                let result = match finished {
                    Some(result) => result,
                    None => work.await,
                };
                if let Err(e) = result {
                    if e.is_panic() {
                        tracing::error!(task = name, error = %e, "leader task panicked");
                    }
                }
                tracing::debug!(task = name, "task stopped");
                if !status.borrow().running {
                    return;
                }
                match ended {
                    Ended::Shutdown => return,
                    Ended::LeadershipLost => {}
                    // Ended while leading: wait for the next term.
                    Ended::ByItself => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = status.wait_for(|s| !leads(s)) => {}
                        }
                    }
                }
            }
        });
    }

    /// Tells every task to stop and waits up to `grace` for them all.
    pub(crate) async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let all = async {
            while let Some(ended) = self.running.join_next().await {
                if let Err(e) = ended {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a background task panicked");
                    }
                }
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("background tasks still running after the grace period; aborted");
            self.running.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use keel_node::ConfState;

    use super::*;

    fn status(role: Role, running: bool) -> Status {
        Status {
            id: 1,
            role,
            leader: None,
            term: 1,
            commit: 0,
            applied: 0,
            conf_state: ConfState::default(),
            running,
        }
    }

    /// Counts how many times the task started and how many of those are
    /// running now.
    #[derive(Default)]
    struct Counts {
        started: AtomicUsize,
        running: AtomicUsize,
    }

    /// A leader task that counts its starts and runs until told to stop.
    fn spawn_counted(tasks: &mut Tasks, status: watch::Receiver<Status>, counts: Arc<Counts>) {
        tasks.spawn_while_leader("test", status, move |stop| {
            let c = counts.clone();
            async move {
                c.started.fetch_add(1, Ordering::SeqCst);
                c.running.fetch_add(1, Ordering::SeqCst);
                stop.cancelled().await;
                c.running.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn leader_tasks_follow_leadership_and_stop_at_shutdown() {
        let (tx, rx) = watch::channel(status(Role::Follower, true));
        let counts = Arc::new(Counts::default());
        let mut tasks = Tasks::new();
        spawn_counted(&mut tasks, rx, counts.clone());
        settle().await;
        assert_eq!(counts.started.load(Ordering::SeqCst), 0, "not leading yet");

        tx.send_replace(status(Role::Leader, true));
        settle().await;
        assert_eq!(
            counts.running.load(Ordering::SeqCst),
            1,
            "started on winning"
        );

        tx.send_replace(status(Role::Follower, true));
        settle().await;
        assert_eq!(
            counts.running.load(Ordering::SeqCst),
            0,
            "stopped on losing"
        );

        tx.send_replace(status(Role::Leader, true));
        settle().await;
        assert_eq!(
            counts.started.load(Ordering::SeqCst),
            2,
            "a fresh task each term"
        );
        assert_eq!(counts.running.load(Ordering::SeqCst), 1);

        tasks.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            counts.running.load(Ordering::SeqCst),
            0,
            "stopped at shutdown"
        );
    }

    #[tokio::test]
    async fn a_leader_task_that_ends_by_itself_runs_again_next_term() {
        let (tx, rx) = watch::channel(status(Role::Leader, true));
        let started = Arc::new(AtomicUsize::new(0));
        let mut tasks = Tasks::new();
        let s = started.clone();
        tasks.spawn_while_leader("test", rx, move |_stop| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
            }
        });
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        tx.send_replace(status(Role::Follower, true));
        settle().await;
        tx.send_replace(status(Role::Leader, true));
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 2, "started again next term");
        tasks.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_stopped_node_ends_leader_tasks_and_shutdown_awaits_every_task() {
        let (tx, rx) = watch::channel(status(Role::Leader, true));
        let counts = Arc::new(Counts::default());
        let mut tasks = Tasks::new();
        spawn_counted(&mut tasks, rx, counts.clone());
        let plain = Arc::new(AtomicUsize::new(0));
        let ended = plain.clone();
        tasks.spawn("plain", move |stop| async move {
            stop.cancelled().await;
            ended.fetch_add(1, Ordering::SeqCst);
        });
        settle().await;
        assert_eq!(counts.running.load(Ordering::SeqCst), 1);
        tx.send_replace(status(Role::Leader, false));
        settle().await;
        assert_eq!(counts.running.load(Ordering::SeqCst), 0, "the node stopped");
        tasks.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            plain.load(Ordering::SeqCst),
            1,
            "the plain task was awaited"
        );
    }
}
