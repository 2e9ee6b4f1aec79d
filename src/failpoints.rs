//! Named crash points for fault-injection tests, driven by one environment
//! variable read once at first use:
//!
//! ```text
//! MATERIALIZER_FAILPOINTS="after_page_write=exit@3;before_lease_renewal=sleep(5000)"
//! ```
//!
//! Each entry is `name=action[@n]`: the action fires on the `n`-th hit of the
//! point (every hit when `@n` is absent). Actions: `exit` (the process ends at
//! once with code [`EXIT_CODE`], no destructors, no flushing: as close to
//! `kill -9` at that exact line as a process can do to itself) and `sleep(ms)`
//! (the calling task pauses, to make a moment long enough to act in) and
//! `panic` (the calling task panics, as a bug would).
//!
//! Points in the code: `after_page_write` (a page is in Redis, the watermark
//! has not moved), `mid_page` (between two newest-wins script calls of one
//! page), `before_watermark_commit`, `before_lease_renewal`, `scheduler_loop`
//! (each time the daemon's scheduler loop goes round).
//!
//! Test tooling only, compiled in with the cargo feature `failpoints` (off by
//! default; `scripts/test.sh` turns it on). Without it [`hit`] and [`armed`]
//! are empty functions the compiler removes, the variable is never read and
//! none of this module's machinery is in the binary, so no failpoint can fire
//! in a shipped build, whatever its environment.
//!
//! Contract (with the feature): when the variable is unset, [`hit`] is one
//! atomic load of an initialised `OnceLock` and returns at once; nothing else
//! changes. An unparseable entry is reported on stderr and ignored (this is
//! test tooling, it must never stop the process under test).

/// Exit code of the `exit` action, distinct from every code the CLI uses.
/// Defined in every build, so tests can name it whatever the features.
pub const EXIT_CODE: i32 = 86;

#[cfg(feature = "failpoints")]
pub use enabled::{armed, hit};

/// Without the feature: the same calls, doing nothing (call sites stay as they are).
#[cfg(not(feature = "failpoints"))]
mod disabled {
    /// Always false: no failpoint exists in this build.
    #[inline(always)]
    pub fn armed(_name: &str) -> bool {
        false
    }

    /// Does nothing: no failpoint exists in this build.
    #[inline(always)]
    pub async fn hit(_name: &str) {}
}

#[cfg(not(feature = "failpoints"))]
pub use disabled::{armed, hit};

#[cfg(feature = "failpoints")]
mod enabled {
    use super::EXIT_CODE;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    const VAR: &str = "MATERIALIZER_FAILPOINTS";

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Exit,
        Panic,
        Sleep(Duration),
    }

    #[derive(Debug)]
    struct Point {
        action: Action,
        /// Fire only on this hit (1-based); every hit when `None`.
        nth: Option<u64>,
        hits: AtomicU64,
    }

    fn points() -> &'static HashMap<String, Point> {
        static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();
        POINTS.get_or_init(|| match std::env::var(VAR) {
            Ok(spec) => parse(&spec),
            _ => HashMap::new(),
        })
    }

    fn parse(spec: &str) -> HashMap<String, Point> {
        let mut out = HashMap::new();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_entry(entry) {
                Some((name, point)) => {
                    out.insert(name, point);
                }
                None => {
                    eprintln!("{VAR}: ignoring `{entry}` (expected name=exit|panic|sleep(ms)[@n])")
                }
            }
        }
        out
    }

    fn parse_entry(entry: &str) -> Option<(String, Point)> {
        let (name, rest) = entry.split_once('=')?;
        let (action, nth) = match rest.split_once('@') {
            Some((a, n)) => (
                a.trim(),
                Some(n.trim().parse::<u64>().ok().filter(|n| *n > 0)?),
            ),
            None => (rest.trim(), None),
        };
        let action = if action == "exit" {
            Action::Exit
        } else if action == "panic" {
            Action::Panic
        } else {
            let ms = action.strip_prefix("sleep(")?.strip_suffix(')')?;
            Action::Sleep(Duration::from_millis(ms.trim().parse().ok()?))
        };
        Some((
            name.trim().to_string(),
            Point {
                action,
                nth,
                hits: AtomicU64::new(0),
            },
        ))
    }

    /// Whether `name` is configured at all (lets a caller take a slower path that
    /// makes the point reachable, only in tests).
    pub fn armed(name: &str) -> bool {
        let p = points();
        !p.is_empty() && p.contains_key(name)
    }

    /// Passes the point `name`: does nothing unless the variable configures it.
    pub async fn hit(name: &str) {
        let p = points();
        if p.is_empty() {
            return;
        }
        let Some(point) = p.get(name) else {
            return;
        };
        let n = point.hits.fetch_add(1, Ordering::SeqCst) + 1;
        if point.nth.is_some_and(|want| want != n) {
            return;
        }
        match point.action {
            Action::Exit => {
                eprintln!("failpoint {name}: exiting (hit {n})");
                // `_exit`-like: no atexit handlers, no buffered output, no Drop.
                std::process::exit(EXIT_CODE)
            }
            Action::Panic => panic!("failpoint {name}: panicking (hit {n})"),
            Action::Sleep(d) => {
                tracing::warn!(
                    failpoint = name,
                    hit = n,
                    ms = d.as_millis() as u64,
                    "failpoint: sleeping"
                );
                tokio::time::sleep(d).await
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn entries_parse_with_and_without_a_hit_number() {
            let p = parse("a=exit@3; b=sleep(250) ;c=bogus;d=exit@0");
            assert_eq!(p["a"].action, Action::Exit);
            assert_eq!(p["a"].nth, Some(3));
            assert_eq!(p["b"].action, Action::Sleep(Duration::from_millis(250)));
            assert_eq!(p["b"].nth, None);
            assert!(!p.contains_key("c") && !p.contains_key("d"));
        }
    }
}
