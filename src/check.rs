//! `materializer check`: the config, Redis, the view files, the warehouse, and
//! every registered view's table and columns, as typed findings.
//!
//! Promises: every problem found is reported, not just the first; a problem
//! that makes the later checks meaningless (Redis or the warehouse
//! unreachable) ends the check there. Never writes anything but what every
//! command does (migrations, `registry.files`).

use std::fmt;

use crate::config::Loaded;
use crate::registry;
use crate::startup;
use crate::sync;

/// One thing checked, and whether it is fine. `check --json` prints these
/// fields as they are named here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub ok: bool,
    /// What was checked: `config PATH`, `redis URL`, `view file`, `warehouse`,
    /// `view NAME:VERSION (TABLE)`.
    pub subject: String,
    /// The problem, empty when fine.
    pub detail: String,
}

impl Finding {
    fn ok(subject: impl Into<String>) -> Finding {
        Finding {
            ok: true,
            subject: subject.into(),
            detail: String::new(),
        }
    }
    fn problem(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            ok: false,
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok     " } else { "PROBLEM" };
        write!(f, "{mark}  {}", self.subject)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// What `check --json` prints: `ok` (every finding fine, the exit code's
/// verdict) and every finding in the order made, `{ok, subject, detail}`.
pub fn report(findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({
        "ok": findings.iter().all(|f| f.ok),
        "findings": findings,
    })
}

/// Runs every check; the findings in the order they were made.
pub async fn check(loaded: &Loaded) -> Vec<Finding> {
    let mut out = vec![Finding::ok(format!("config {}", loaded.path.display()))];
    for k in &loaded.unknown_keys {
        out.push(Finding::problem("config", format!("unknown key `{k}`")));
    }
    let connected = match startup::connect(loaded).await {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::problem("redis", format!("{e:#}")));
            return out;
        }
    };
    let p = &loaded.config.profiles;
    out.push(Finding::ok(format!(
        "redis {} ({})",
        p.redis_url,
        p.redis_type.as_str()
    )));
    for p in connected.file_problems {
        out.push(Finding::problem("view file", p));
    }
    let wh = match crate::warehouse::build(&loaded.config.warehouse) {
        Ok(w) => w,
        Err(e) => {
            out.push(Finding::problem("warehouse", format!("{e:#}")));
            return out;
        }
    };
    if let Err(e) = wh.ping().await {
        out.push(Finding::problem("warehouse", e.to_string()));
        return out;
    }
    out.push(Finding::ok("warehouse"));
    let views = match registry::list(&connected.store).await {
        Ok(v) => v,
        Err(e) => {
            out.push(Finding::problem("registry", format!("{e:#}")));
            return out;
        }
    };
    for v in views {
        let table = sync::table_of(&v);
        let subject = format!("view {} ({table})", v.id());
        match wh.describe(&table).await {
            Err(e) => out.push(Finding::problem(format!("view {}", v.id()), e.to_string())),
            Ok(cols) => match sync::plan_columns(&v, &cols) {
                Ok(_) => out.push(Finding::ok(subject)),
                Err(ps) => out.extend(ps.into_iter().map(|p| Finding::problem(subject.clone(), p))),
            },
        }
    }
    out
}
