//! The registered views as the read path sees them: held in memory, so an
//! attribute read costs no registry round trip.
//!
//! Promises:
//! - [`Views::get`] answers from memory while the copy is current: checked
//!   against the registry's version (state epoch and revision) within the last
//!   [`MAX_AGE`], and not marked stale since;
//! - a background task checks the version every [`CHECK_EVERY`] and re-reads the
//!   registry only when it changed, so a change made elsewhere (the CLI,
//!   another replica) is seen within about a second, as the scheduler's copy
//!   sees it within `REGISTRY_REFRESH`;
//! - [`Views::mark_stale`] (called after every registry change made through
//!   this API) makes the next read check at once, so a client reads its own
//!   changes; [`Views::refresh`] checks now, for a caller about to answer that
//!   something does not exist;
//! - one check runs at a time; callers that arrive meanwhile share its result.
//!
//! Assumes every registry change bumps the revision or the epoch (as
//! `profiles::state` does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::model::View;
use crate::profiles::state::RegistryVersion;
use crate::profiles::ProfileStore;

/// How often the background task compares the registry's version.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A copy older than this is checked on the request path: the background
/// task is late (Redis unreachable, or the runtime starved).
pub const MAX_AGE: Duration = Duration::from_secs(3);

/// Views by Feast name (`{name}_v{version}`).
pub type ByFeastName = Arc<HashMap<String, View>>;

#[derive(Default)]
struct Held {
    version: Option<RegistryVersion>,
    views: ByFeastName,
    /// When `version` was last confirmed; `None` before the first read.
    checked: Option<Instant>,
}

#[derive(Default)]
pub struct Views {
    held: RwLock<Held>,
    stale: AtomicBool,
    /// Held while one caller checks, so concurrent callers wait for it
    /// instead of all asking Redis.
    checking: tokio::sync::Mutex<()>,
}

impl Views {
    /// The views, from memory if current (see the module's promises).
    pub async fn get(&self, store: &ProfileStore) -> anyhow::Result<ByFeastName> {
        if !self.stale.load(Ordering::Acquire) {
            let copy = self.held.read().expect("never poisoned");
            if copy.checked.is_some_and(|at| at.elapsed() < MAX_AGE) {
                return Ok(copy.views.clone());
            }
        }
        self.refresh(store).await
    }

    /// The views as of now: the version is read (one round trip), and the
    /// registry too if the version changed. A caller that waited for another
    /// caller's check that began after it asked takes that one's result.
    pub async fn refresh(&self, store: &ProfileStore) -> anyhow::Result<ByFeastName> {
        let asked = Instant::now();
        let _one = self.checking.lock().await;
        {
            let copy = self.held.read().expect("never poisoned");
            if copy.checked.is_some_and(|at| at >= asked) && !self.stale.load(Ordering::Acquire) {
                return Ok(copy.views.clone());
            }
        }
        // Cleared before reading, so a change that lands during the read
        // marks the copy stale again rather than being lost.
        self.stale.store(false, Ordering::Release);
        let started = Instant::now();
        let version = store.registry_version().await?;
        let unchanged = {
            let mut copy = self.held.write().expect("never poisoned");
            let same = copy.version.as_ref() == Some(&version);
            if same {
                copy.checked = Some(started);
            }
            same.then(|| copy.views.clone())
        };
        if let Some(views) = unchanged {
            return Ok(views);
        }
        // Read after the version: a change in between makes the next check
        // read the registry again, never keeps an older registry as current.
        let listed = crate::registry::list(store).await?;
        let views: ByFeastName =
            Arc::new(listed.into_iter().map(|v| (v.feast_name(), v)).collect());
        *self.held.write().expect("never poisoned") = Held {
            version: Some(version),
            views: views.clone(),
            checked: Some(started),
        };
        Ok(views)
    }

    /// Makes the next [`Views::get`] check the registry first.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Checks every [`CHECK_EVERY`] until the API's state is dropped. A
    /// failed check keeps the copy; once it is older than [`MAX_AGE`] reads
    /// check for themselves (and fail as Redis does).
    pub fn keep_current(state: Weak<super::ApiState>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = state.upgrade() else { return };
                let due = state
                    .views
                    .held
                    .read()
                    .expect("never poisoned")
                    .checked
                    .is_none_or(|at| at.elapsed() >= CHECK_EVERY);
                if due {
                    if let Err(e) = state.views.refresh(&state.store).await {
                        tracing::debug!(error = %format!("{e:#}"), "cannot check the registry for the API's views; keeping them");
                    }
                }
            }
        });
    }
}
