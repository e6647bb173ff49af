//! Crash points for crash-safety tests: `FLOE_TEST_ABORT_AT=<point>[:<n>]` makes the process
//! abort (like a SIGKILL: no flush, no cleanup) the n-th time (default first) it passes the
//! named point. Points: `staged` (a delta is staged, its commit not done), `index-built` (a
//! table's key index is built from the table, the commit that needed it not done),
//! `table-committed` (the table commit is done, the Kafka offsets are not). Unset, a point
//! costs one atomic load.
//!
//! `FLOE_TEST_PAUSE_AT=<point>:<milliseconds>` blocks the loop that long the first time it
//! passes the named pause, as a loop stalled that long would. Pauses: `table-commit`
//! (a commit round with staged work is about to start; the loop does not poll meanwhile).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub const ENV: &str = "FLOE_TEST_ABORT_AT";
pub const PAUSE_ENV: &str = "FLOE_TEST_PAUSE_AT";

fn spec() -> &'static Option<(String, u32)> {
    static SPEC: OnceLock<Option<(String, u32)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let raw = std::env::var(ENV).ok()?;
        let (point, nth) = match raw.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (raw, 1),
        };
        Some((point, nth.max(1)))
    })
}

pub fn point(name: &str) {
    static HITS: AtomicU32 = AtomicU32::new(0);
    if let Some((at, nth)) = spec()
        && at == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        eprintln!("{ENV}: aborting at {name}");
        std::process::abort();
    }
}

pub fn pause(name: &str) {
    static PAUSE: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static DONE: AtomicU32 = AtomicU32::new(0);
    let spec = PAUSE.get_or_init(|| {
        let raw = std::env::var(PAUSE_ENV).ok()?;
        let (point, ms) = raw.split_once(':')?;
        Some((point.to_string(), ms.parse().ok()?))
    });
    if let Some((at, ms)) = spec
        && at == name
        && DONE.fetch_add(1, Ordering::SeqCst) == 0
    {
        eprintln!("{PAUSE_ENV}: pausing {ms} ms at {name}");
        std::thread::sleep(std::time::Duration::from_millis(*ms));
        eprintln!("{PAUSE_ENV}: resuming after {name}");
    }
}
