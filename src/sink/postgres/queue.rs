//! Statements sent back to back: the writers queue their statements as [`Pending`] futures, and
//! [`sent`] puts the whole queue on the wire in one round trip and waits for every answer.
//!
//! Owns only that mechanism. Uses nothing of the sink: the statements are futures built by
//! `values` and `pivot`.

use crate::error::Result;

/// A statement sent and not yet answered.
pub(super) type Pending<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// Sends queued statements back to back and waits for every answer. A statement's messages go
/// out on its future's first poll (tokio-postgres writes them before it first waits), so each
/// future is polled once, in queue order, before any answer is awaited: the server runs them in
/// that order. Every answer is awaited; the first failure in queue order is the error (the ones
/// after it only fail because the transaction is aborted).
pub(super) async fn sent(mut pending: Vec<Pending<'_>>) -> Result<()> {
    let mut results: Vec<Option<Result<()>>> = {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        pending
            .iter_mut()
            .map(|f| match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => Some(r),
                std::task::Poll::Pending => None,
            })
            .collect()
    };
    for (f, r) in pending.into_iter().zip(results.iter_mut()) {
        if r.is_none() {
            *r = Some(f.await);
        }
    }
    results.into_iter().flatten().collect()
}
