//! Statements sent back to back: the writers queue their statements as [`Pending`] futures, and
//! [`sent`] puts the whole queue on the wire in one round trip and waits for every answer;
//! [`sent_then`] sends queries that return something right behind them.
//!
//! Owns only that mechanism. Uses nothing of the sink: the statements are futures built by
//! `values` and `pivot`.

use crate::error::Result;

/// A statement sent and not yet answered.
pub(super) type Pending<'a> = Asked<'a, ()>;

/// Sends queued statements back to back and waits for every answer. A statement's messages go
/// out on its future's first poll (tokio-postgres writes them before it first waits), so each
/// future is polled once, in queue order, before any answer is awaited: the server runs them in
/// that order. Every answer is awaited; the first failure in queue order is the error (the ones
/// after it only fail because the transaction is aborted).
pub(super) async fn sent(pending: Vec<Pending<'_>>) -> Result<()> {
    sent_then::<()>(pending, Vec::new()).await.map(|_| ())
}

/// A query sent and not yet answered, with its answer.
pub(super) type Asked<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// [`sent`], with `then` sent right behind `pending` in the same round trip (so they see what
/// `pending` wrote): returns their answers in order. A failure of `pending` comes first.
pub(super) async fn sent_then<T>(
    mut pending: Vec<Pending<'_>>,
    mut then: Vec<Asked<'_, T>>,
) -> Result<Vec<T>> {
    let mut written = poll_once(&mut pending);
    let mut answers = poll_once(&mut then);
    for (f, r) in pending.into_iter().zip(written.iter_mut()) {
        if r.is_none() {
            *r = Some(f.await);
        }
    }
    for (f, r) in then.into_iter().zip(answers.iter_mut()) {
        if r.is_none() {
            *r = Some(f.await);
        }
    }
    written.into_iter().flatten().collect::<Result<()>>()?;
    answers.into_iter().flatten().collect()
}

/// Polls each future once, in order (which sends its statement); the answers already there.
fn poll_once<T>(futures: &mut [Asked<'_, T>]) -> Vec<Option<Result<T>>> {
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    futures
        .iter_mut()
        .map(|f| match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        })
        .collect()
}
