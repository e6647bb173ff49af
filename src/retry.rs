//! retry: how Floe waits between tries of a call that may fail for a while (S3 throttling, a
//! catalog's 5xx, a broker timeout): exponential backoff with jitter and a bounded number of
//! retries, each one reported before its wait. Every boundary uses a [`Backoff`]; calls that
//! only retry go through [`Backoff::retry`], loops that do more between tries (the commit
//! engine reloads the table, the REST client honours `Retry-After`) take their waits from
//! [`Backoff::delays`].

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

/// Waits doubling from `first` up to `longest`, at most `retries` of them, each with up to
/// as much again of random jitter (so that racing writers do not retry in lockstep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub longest: Duration,
    pub retries: usize,
}

impl Backoff {
    pub const fn new(first: Duration, longest: Duration, retries: usize) -> Self {
        Backoff {
            first,
            longest,
            retries,
        }
    }

    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.longest)
            .with_max_times(self.retries)
            .with_factor(2.0)
            .with_jitter()
    }

    /// The waits between tries, in order; it ends after `retries` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.builder().build()
    }

    /// Runs `call` until it succeeds, fails with an error `transient` does not accept, or has
    /// been retried `retries` times (the last error is returned). `retrying` hears of each
    /// retry, with the error and the wait, before the wait.
    pub async fn retry<T, E, F, Fut>(
        &self,
        call: F,
        transient: impl FnMut(&E) -> bool,
        retrying: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        call.retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(transient)
            .notify(retrying)
            .await
    }

    /// [`Backoff::retry`] for a blocking call on a thread of its own (never on the async
    /// runtime): the waits block the calling thread.
    pub fn retry_blocking<T, E>(
        &self,
        call: impl FnMut() -> Result<T, E>,
        transient: impl FnMut(&E) -> bool,
        retrying: impl FnMut(&E, Duration),
    ) -> Result<T, E> {
        use backon::BlockingRetryable;
        call.retry(self.builder())
            .sleep(std::thread::sleep)
            .when(transient)
            .notify(retrying)
            .call()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const QUICK: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4), 3);

    #[test]
    fn waits_double_up_to_the_longest_with_at_most_as_much_jitter() {
        let slow = Backoff::new(Duration::from_secs(1), Duration::from_secs(4), 5);
        let waits: Vec<Duration> = slow.delays().collect();
        assert_eq!(waits.len(), 5, "{waits:?}");
        for (wait, base) in waits.iter().zip([1, 2, 4, 4, 4]) {
            let base = Duration::from_secs(base);
            assert!(*wait >= base && *wait <= base * 2, "{waits:?}");
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_the_call_succeeds() {
        let calls = AtomicU32::new(0);
        let mut told = Vec::new();
        let result = QUICK
            .retry(
                || async {
                    match calls.fetch_add(1, Ordering::SeqCst) {
                        0 | 1 => Err("busy"),
                        n => Ok(n),
                    }
                },
                |e| *e == "busy",
                |e, _| told.push(e.to_string()),
            )
            .await;
        assert_eq!(result, Ok(2));
        assert_eq!(told, ["busy", "busy"]);
    }

    #[tokio::test]
    async fn a_permanent_failure_is_returned_at_once_and_retries_are_bounded() {
        let calls = AtomicU32::new(0);
        let permanent: Result<(), &str> = QUICK
            .retry(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("denied")
                },
                |e| *e == "busy",
                |_, _| {},
            )
            .await;
        assert_eq!(permanent, Err("denied"));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

        let busy: Result<(), &str> = QUICK
            .retry(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("busy")
                },
                |_| true,
                |_, _| {},
            )
            .await;
        assert_eq!(busy, Err("busy"));
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one try and three retries");
    }
}
