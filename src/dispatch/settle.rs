//! Work that must finish once begun, whoever stops waiting for it.
//!
//! A commit and what follows it (giving back what admission counted when
//! the commit fails, ending a replica's hold on a SOP) decide whether
//! admission mirrors the store. The callers' futures can be dropped at any
//! await: a request that times out, a client that goes away, a source
//! shutting down. If that happened between the commit and its follow-up,
//! a slot would stay counted for a run that was never written (a SOP with
//! `max_concurrent = 1` would defer everything until a restart), or be
//! given back for one that was. [`settled`] keeps the pair together: its
//! work, dropped unfinished, is handed to the runtime to finish.

use std::future::Future;
use std::pin::Pin;

/// Awaits `work` to its end; if the caller is dropped first, `work` goes
/// on as a task of its own (when there is still a runtime to run it).
pub async fn settled<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let mut finish = Finish(Some(Box::pin(work)));
    let done = finish.0.as_mut().expect("unfinished until awaited").await;
    finish.0 = None;
    done
}

type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct Finish<T: Send + 'static>(Option<Work<T>>);

impl<T: Send + 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        if let (Some(work), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn work_whose_caller_is_dropped_finishes_anyway() {
        let (go, wait) = oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let (done, heard) = oneshot::channel();
        let caller = {
            let finished = finished.clone();
            settled(async move {
                wait.await.unwrap();
                finished.store(true, Ordering::SeqCst);
                done.send(()).unwrap();
            })
        };
        let mut caller = Box::pin(caller);
        assert!(futures_util::poll!(caller.as_mut()).is_pending(), "the work waits");
        drop(caller);
        go.send(()).unwrap();
        heard.await.expect("the dropped work ran to its end");
        assert!(finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn work_awaited_to_its_end_answers_and_runs_once() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        let answer = settled(async move { counted.fetch_add(1, Ordering::SeqCst) + 41 }).await;
        assert_eq!(answer, 41);
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "nothing was handed on after it finished");
    }
}
