//! The daemon loop: every online view runs once per interval (or its
//! `refresh_rate`), at most `max_concurrent_views` at a time.
//!
//! Promises: a failed run is retried with capped exponential backoff and
//! jitter while other views keep their schedule; a view whose lease another
//! replica holds is left to it until the next interval; the registry is
//! re-read every few seconds, so views applied by another process start
//! syncing without a restart; if Redis loses the daemon's state (flush,
//! failover to an empty replica) the registry is restored from memory and the
//! files, and every view resyncs from scratch. On shutdown no new run starts;
//! running ones stop at their next page boundary without committing, and the
//! loop waits for them up to `shutdown_grace`.
//!
//! Liveness: the loop beats a [`Heartbeat`] every time it goes round (at least
//! every [`REGISTRY_REFRESH`] while it is healthy), which the HTTP API reads
//! through [`SchedulerHandle::progress`]: `/healthz` fails once no beat came
//! for `scheduler.stall_after`, so a wedged loop gets the pod restarted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::SchedulerConfig;
use crate::model::{View, ViewId};
use crate::profiles::RunRecord;
use crate::registry;
use crate::sync::{format_skipped, RunError, Runner};

/// How often the registry is re-read from Redis: also the longest the loop
/// sleeps, so the longest gap between two beats of a healthy loop (plus the
/// Redis calls of one round).
pub const REGISTRY_REFRESH: Duration = Duration::from_secs(5);

/// When the scheduler loop last went round, on the monotonic clock, and how
/// long a silence counts as stalled. Shared by the loop and the HTTP API.
#[derive(Debug)]
pub struct Heartbeat {
    born: std::time::Instant,
    /// Milliseconds after `born` of the last beat.
    last_ms: AtomicU64,
    stall_after_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Heartbeat {
        Heartbeat {
            born: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            stall_after_ms: AtomicU64::new(
                crate::config::SchedulerConfig::default()
                    .stall_after
                    .as_millis() as u64,
            ),
        }
    }

    fn beat(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// How long since the last beat (since the handle was made, before the first).
    pub fn silence(&self) -> Duration {
        let now = self.born.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The silence after which the loop counts as stalled (`scheduler.stall_after`).
    pub fn stall_after(&self) -> Duration {
        Duration::from_millis(self.stall_after_ms.load(Ordering::Relaxed))
    }
}

/// How the scheduler loop is doing, as `/healthz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub silence: Duration,
    pub stall_after: Duration,
}

impl Progress {
    pub fn stalled(&self) -> bool {
        self.silence >= self.stall_after
    }
}

#[derive(Debug, Default)]
struct ViewState {
    next_due: Option<Instant>,
    failures: u32,
    running: bool,
    /// A run was asked for while one was running: start another right after.
    rerun: bool,
}

/// What other parts of the process (the HTTP API) can ask of the scheduler.
#[derive(Debug)]
pub enum Command {
    /// Re-read the registry and run this view now (or right after its current run).
    RunNow(ViewId),
    /// Re-read the registry now (a view was applied or deleted).
    Refresh,
    /// The view was deleted: never restore it after Redis loses its state.
    Forget(ViewId),
}

/// Cheap to clone; sending fails only once the scheduler has stopped.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    heartbeat: Arc<Heartbeat>,
}

impl SchedulerHandle {
    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// How long the loop has been silent, against its bound.
    pub fn progress(&self) -> Progress {
        Progress {
            silence: self.heartbeat.silence(),
            stall_after: self.heartbeat.stall_after(),
        }
    }
}

/// The scheduler's end of [`channel`]: commands in, heartbeat out.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Command>,
    heartbeat: Arc<Heartbeat>,
}

/// A handle and the receiving end to put into [`Scheduler::commands`].
pub fn channel() -> (SchedulerHandle, Inbox) {
    let (tx, rx) = mpsc::channel(256);
    let heartbeat = Arc::new(Heartbeat::new());
    (
        SchedulerHandle {
            tx,
            heartbeat: heartbeat.clone(),
        },
        Inbox { rx, heartbeat },
    )
}

pub struct Scheduler {
    pub runner: Runner,
    pub config: SchedulerConfig,
    /// Views from `registry.files`, re-applied if Redis loses the registry.
    pub file_views: Vec<View>,
    pub commands: Inbox,
}

/// One run of `view` under the policy the daemon and `sync` share: it waits
/// for one of `permits` (at most `max_concurrent_views` runs at once), starts
/// nothing once `stop` is cancelled, runs once more at once when the view was
/// reshaped or reset during the run (the registered shape runs), and, with
/// `lease_wait`, waits up to that long for a lease another replica holds (a
/// crashed holder's lease expires by itself) instead of giving up.
pub async fn run_view(
    runner: &Runner,
    view: &View,
    permits: &Semaphore,
    stop: &CancellationToken,
    lease_wait: Option<Duration>,
) -> (RunRecord, Result<(), RunError>) {
    let Ok(_permit) = permits.acquire().await else {
        return (RunRecord::default(), Err(RunError::Interrupted));
    };
    let deadline = lease_wait.map(|w| later(Instant::now(), w));
    let mut rerun = true;
    loop {
        if stop.is_cancelled() {
            return (RunRecord::default(), Err(RunError::Interrupted));
        }
        let (rec, outcome) = runner.run(view, stop).await;
        match outcome {
            Err(RunError::LeaseHeld(ref h)) if deadline.is_some_and(|d| Instant::now() < d) => {
                tracing::info!(view = %view.id(), holder = %h, "waiting for the view's lease");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(RunError::Superseded(ref why)) if std::mem::take(&mut rerun) => {
                tracing::info!(view = %view.id(), reason = %why, "running again");
            }
            _ => return (rec, outcome),
        }
    }
}

/// One run of every view of `views` now, as `sync` does: online views only (an
/// offline one gets `None`), under [`run_view`]'s policy with `lease_wait`.
pub async fn run_once<'v>(
    runner: &Runner,
    views: &'v [View],
    max_concurrent_views: usize,
    lease_wait: Duration,
    stop: &CancellationToken,
) -> Vec<(&'v View, Option<(RunRecord, Result<(), RunError>)>)> {
    let permits = Semaphore::new(max_concurrent_views);
    let ran = futures::future::join_all(views.iter().map(|view| {
        let permits = &permits;
        async move {
            if !view.online {
                return (view, None);
            }
            let ran = run_view(runner, view, permits, stop, Some(lease_wait)).await;
            (view, Some(ran))
        }
    }))
    .await;
    runner.warehouse.finish().await;
    ran
}

/// Delay before retry number `failures` (1-based): doubling from `initial`,
/// capped at `max`, then scaled by a random factor in [0.5, 1.0] so replicas
/// and views do not retry in lockstep.
pub fn backoff(failures: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(max).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// How far ahead a run is planned when `from + by` does not fit an [`Instant`].
const FAR_AHEAD: Duration = Duration::from_secs(365 * 86_400);

/// `from + by`, never panicking: an instant past the clock's range becomes
/// [`FAR_AHEAD`] from `from` (or `from` itself if even that does not fit).
fn later(from: Instant, by: Duration) -> Instant {
    from.checked_add(by)
        .or_else(|| from.checked_add(FAR_AHEAD))
        .unwrap_or(from)
}

impl Scheduler {
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent_views));
        let (done_tx, mut done_rx) = mpsc::channel::<(ViewId, Result<(), RunError>)>(64);
        let mut states: HashMap<ViewId, ViewState> = HashMap::new();
        let mut views: BTreeMap<ViewId, View> = BTreeMap::new();
        let mut known: BTreeMap<ViewId, View> = self
            .file_views
            .iter()
            .map(|v| (v.id(), v.clone()))
            .collect();
        // The state incarnation and registry revision last seen (see `refresh`).
        let mut seen = Seen::default();
        let mut next_refresh = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        // Which view each run task serves, so a task that panics (and so never
        // reports) still settles its view instead of leaving it "running" forever.
        let mut task_views: HashMap<tokio::task::Id, ViewId> = HashMap::new();
        let heartbeat = self.commands.heartbeat.clone();
        heartbeat.stall_after_ms.store(
            self.config.stall_after.as_millis() as u64,
            Ordering::Relaxed,
        );
        tracing::info!(
            interval = %humantime::format_duration(self.config.interval),
            max_concurrent_views = self.config.max_concurrent_views,
            "scheduler started"
        );

        loop {
            heartbeat.beat();
            // Tests stall the loop here to see `/healthz` fail.
            crate::failpoints::hit("scheduler_loop").await;
            if Instant::now() >= next_refresh {
                next_refresh = later(Instant::now(), REGISTRY_REFRESH);
                match self.refresh(&mut known, &mut seen).await {
                    Ok(list) => views = list,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot read the registry; keeping the last one")
                    }
                }
                states.retain(|id, s| s.running || views.contains_key(id));
            }

            let now = Instant::now();
            for (id, view) in &views {
                if !view.online {
                    continue;
                }
                let st = states.entry(id.clone()).or_default();
                // A new view starts soon, spread a little so replicas interleave.
                let due = *st.next_due.get_or_insert_with(|| {
                    later(
                        now,
                        Duration::from_millis(rand::thread_rng().gen_range(0..500)),
                    )
                });
                if st.running || due > now {
                    continue;
                }
                st.running = true;
                let (runner, view, done, permits, stop) = (
                    self.runner.clone(),
                    view.clone(),
                    done_tx.clone(),
                    permits.clone(),
                    shutdown.clone(),
                );
                let span = tracing::info_span!("run", view = %id);
                let task = tasks.spawn(
                    async move {
                        let (rec, outcome) = run_view(&runner, &view, &permits, &stop, None).await;
                        match &outcome {
                            Ok(()) | Err(RunError::Interrupted) => {}
                            Err(RunError::LeaseHeld(h)) => {
                                tracing::debug!(holder = %h, "another replica is syncing this view")
                            }
                            Err(e) => tracing::error!(
                                kind = e.kind(),
                                error = %e,
                                rows_written = rec.rows_written,
                                skipped = %format_skipped(&rec.skipped),
                                "run failed; the watermark stays"
                            ),
                        }
                        let _ = done.send((view.id(), outcome)).await;
                    }
                    .instrument(span),
                );
                task_views.insert(task.id(), id.clone());
            }

            let wake = states
                .values()
                .filter(|s| !s.running)
                .filter_map(|s| s.next_due)
                .chain(std::iter::once(next_refresh))
                .min()
                .unwrap_or(next_refresh);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
                Some((id, outcome)) = done_rx.recv() => {
                    if matches!(outcome, Err(RunError::Superseded(_))) {
                        next_refresh = Instant::now();
                    }
                    self.settle(states.entry(id.clone()).or_default(), views.get(&id), outcome);
                }
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let task = match &joined {
                        Ok((task, ())) => *task,
                        Err(e) => e.id(),
                    };
                    if let (Some(id), Err(e)) = (task_views.remove(&task), joined) {
                        tracing::error!(view = %id, error = %e, "run task died; retrying after backoff");
                        let failed = Err(RunError::Retryable(format!("run task died: {e}")));
                        self.settle(states.entry(id.clone()).or_default(), views.get(&id), failed);
                    }
                }
                Some(cmd) = self.commands.rx.recv() => {
                    next_refresh = Instant::now();
                    if let Command::Forget(id) = &cmd {
                        known.remove(id);
                    }
                    if let Command::RunNow(id) = cmd {
                        let st = states.entry(id).or_default();
                        if st.running {
                            st.rerun = true;
                        } else {
                            st.next_due = Some(Instant::now());
                        }
                    }
                }
            }
        }

        tracing::info!(
            running = tasks.len(),
            grace = %humantime::format_duration(self.config.shutdown_grace),
            "shutting down: no new runs; running ones stop at their next page"
        );
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown grace elapsed; abandoning runs (their watermarks were not committed)"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        self.runner.warehouse.finish().await;
        Ok(())
    }

    /// Plans the next run of a view from the outcome of its last one.
    fn settle(&self, st: &mut ViewState, view: Option<&View>, outcome: Result<(), RunError>) {
        st.running = false;
        let interval = view
            .and_then(View::refresh_rate)
            .unwrap_or(self.config.interval);
        let delay = match outcome {
            Ok(()) | Err(RunError::LeaseHeld(_)) => {
                st.failures = 0;
                interval
            }
            Err(RunError::Interrupted) => interval,
            // The registry changed under the run: run again at once, in the
            // registered shape (the registry is re-read first).
            Err(RunError::Superseded(_)) => {
                st.failures = 0;
                Duration::ZERO
            }
            Err(_) => {
                st.failures += 1;
                let delay = backoff(
                    st.failures,
                    self.config.retry_initial,
                    self.config.retry_max,
                    rand::thread_rng().gen(),
                )
                .min(interval.max(self.config.retry_initial));
                tracing::warn!(
                    view = %view.map(|v| v.id().to_string()).unwrap_or_default(),
                    failures = st.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "run failed; retrying after backoff"
                );
                delay
            }
        };
        st.next_due = Some(later(
            Instant::now(),
            if std::mem::take(&mut st.rerun) {
                Duration::ZERO
            } else {
                delay
            },
        ));
    }

    /// Re-reads the registry; restores it when Redis lost the daemon's state
    /// or the registry went back in time.
    ///
    /// Loss shows as a missing or changed state epoch: after a flush, any
    /// process that connects (a CLI command, another replica) re-creates the
    /// state layout with a new epoch, so the layout being present again must
    /// not hide that the views applied through the API are gone. A failover to
    /// a lagging replica, or a restore of an older snapshot, keeps the epoch
    /// but shows a registry revision lower than one already seen: views applied
    /// since would look deleted, so the registry is restored the same way.
    async fn refresh(
        &self,
        known: &mut BTreeMap<ViewId, View>,
        seen: &mut Seen,
    ) -> anyhow::Result<BTreeMap<ViewId, View>> {
        let store = &self.runner.store;
        let current = store.state_epoch().await?;
        let (mut revision, mut views) = registry::list_with_revision(store).await?;
        let lost = match (&current, &seen.epoch) {
            (None, _) => true,
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => false,
        };
        let went_back = !lost && revision < seen.revision;
        if lost || went_back {
            if lost {
                tracing::warn!(
                    views = known.len(),
                    "Redis holds none of the daemon's state (flushed or replaced): restoring the registry; every view resyncs"
                );
                store.migrate().await?;
            } else {
                tracing::warn!(
                    views = known.len(),
                    revision,
                    seen = seen.revision,
                    "the registry went back in time (failover to a lagging replica, or an older snapshot): restoring the views this daemon knows"
                );
            }
            let all: Vec<View> = known.values().cloned().collect();
            registry::apply(store, &all).await?;
            (revision, views) = registry::list_with_revision(store).await?;
        }
        let epoch = store.state_epoch().await?;
        let listed: BTreeMap<ViewId, View> = views.into_iter().map(|v| (v.id(), v)).collect();
        // Gone from an intact registry means deleted on purpose: a later
        // restore must not bring it back (files are re-read at start anyway).
        // Intact means the same epoch before and after the listing.
        if !lost && !went_back && epoch == current {
            known.retain(|id, _| {
                listed.contains_key(id) || self.file_views.iter().any(|v| v.id() == *id)
            });
        }
        known.extend(listed.iter().map(|(k, v)| (k.clone(), v.clone())));
        *seen = Seen { epoch, revision };
        Ok(listed)
    }
}

/// What [`Scheduler::refresh`] last saw of the state: its incarnation and the
/// registry's revision.
#[derive(Debug, Default)]
struct Seen {
    epoch: Option<String>,
    revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(10), s(300), 1.0), s(10));
        assert_eq!(backoff(2, s(10), s(300), 1.0), s(20));
        assert_eq!(backoff(3, s(10), s(300), 1.0), s(40));
        assert_eq!(backoff(30, s(10), s(300), 1.0), s(300));
        assert_eq!(backoff(1, s(10), s(300), 0.0), s(5));
    }

    #[test]
    fn planning_a_run_past_the_clocks_range_never_panics() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now + FAR_AHEAD);
        assert_eq!(
            later(now, Duration::from_secs(10_000_000_000_000_000_000)),
            now + FAR_AHEAD
        );
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
