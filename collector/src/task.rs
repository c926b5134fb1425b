//! Joining tasks without mistaking a runtime that is shutting down for a panic.
//!
//! Tokio's `JoinError` is one of two things: the task panicked, or it was cancelled. A
//! blocking task is cancelled when it is spawned after the runtime began to shut down (a
//! start-up error returns, `main` shuts the runtime down while a sink is still running):
//! calling `into_panic()` on that error panics itself ("JoinError reason is not a panic"),
//! and `unwrap()` does too. Every blocking call whose result the caller needs goes through
//! [`blocking`], which keeps the two apart.

/// The runtime is shutting down: the blocking work was never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the runtime is shutting down")]
pub struct ShuttingDown;

/// Runs `f` on Tokio's blocking pool and returns what it returned.
///
/// A panic in `f` is resumed in the caller (a bug stays a panic, with its message);
/// `Err(ShuttingDown)` when the runtime is shutting down and `f` did not run.
///
/// # Errors
/// [`ShuttingDown`], as above.
///
/// # Cancel safety
/// Dropping the future does not stop `f` once it has started; its result is then lost.
pub async fn blocking<T, F>(f: F) -> Result<T, ShuttingDown>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Ok(value),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_cancelled) => Err(ShuttingDown),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::future::Future;

    use super::*;

    /// Runs `fut` to completion on a fresh runtime, with every blocking task it spawns sent
    /// to a runtime that has already shut down: each is cancelled at once, as happens to a
    /// task that spawns blocking work while `main` shuts the runtime down. Deterministic,
    /// where the shutdown race it stands for is not.
    pub(crate) fn with_blocking_pool_shut_down<F: Future>(fut: F) -> F::Output {
        let dead = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = dead.handle().clone();
        drop(dead);
        let live = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut fut = std::pin::pin!(fut);
        live.block_on(std::future::poll_fn(|cx| {
            let _in_dead = handle.enter();
            fut.as_mut().poll(cx)
        }))
    }

    #[test]
    fn a_shut_down_runtime_is_not_a_panic() {
        let got = with_blocking_pool_shut_down(blocking(|| 1));
        assert_eq!(got, Err(ShuttingDown));
    }

    #[tokio::test]
    async fn the_value_and_a_panic_come_back() {
        assert_eq!(blocking(|| 7).await, Ok(7));
        let panicked = tokio::spawn(blocking(|| -> u8 { panic!("boom") }))
            .await
            .unwrap_err();
        let message = panicked.into_panic();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"boom"));
    }
}
