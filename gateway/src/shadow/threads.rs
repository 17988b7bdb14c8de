//! The shadow threads: `shadow_threads` OS threads named `shadow` (at nice `shadow_nice`), each
//! driving its own current-thread tokio runtime. A route's lane (its dispatcher and every mirror
//! it sends) lives on one of them, chosen round-robin when the lane is made.
//!
//! Why current-thread runtimes and not one multi-thread runtime: a runtime whose driver is only
//! ever parked by the thread that runs its tasks has no scheduler hand-offs (no inject queue, no
//! idle/searching bookkeeping, no cross-thread unparks), and everything a mirror wakes (its
//! connection task, hyper-util's pool, the lane) is woken on the same thread.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running shadow threads. Dropping it stops them: each finishes its runtime (dropping the
/// tasks still on it, as dropping a runtime does) and exits.
pub(crate) struct ShadowThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropping a sender ends its thread's `block_on`.
    _stop: Vec<oneshot::Sender<()>>,
}

impl ShadowThreads {
    /// Starts `threads` (at least one) threads at nice `nice` (per thread on Linux: only the
    /// shadow threads get the lower priority).
    pub(crate) fn start(threads: usize, nice: i32) -> std::io::Result<Self> {
        let mut handles = Vec::with_capacity(threads.max(1));
        let mut stop = Vec::with_capacity(threads.max(1));
        for _ in 0..threads.max(1) {
            let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new().name("shadow".into()).spawn(move || {
                if nice > 0 {
                    let _ = rustix::process::nice(nice);
                }
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("the shadow thread exited before its runtime started"))??;
            handles.push(handle);
            stop.push(stop_tx);
        }
        Ok(Self { handles, next: AtomicUsize::new(0), _stop: stop })
    }

    /// Runs `task` on the next thread (round-robin).
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Tasks run on the `shadow` threads, spread over them, and the threads stop when dropped.
    #[test]
    fn runs_tasks_round_robin_on_named_threads() {
        let threads = ShadowThreads::start(2, 0).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            threads.spawn(async move {
                let t = std::thread::current();
                tx.send((t.name().map(String::from), t.id())).unwrap();
            });
        }
        let seen: Vec<_> = (0..4).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert!(seen.iter().all(|(n, _)| n.as_deref() == Some("shadow")), "{seen:?}");
        let ids: std::collections::HashSet<_> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), 2, "four tasks round-robin over two threads: {seen:?}");

        // a task that never ends is dropped with its thread's runtime when the threads stop
        struct Guard(std::sync::mpsc::Sender<&'static str>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.send("dropped");
            }
        }
        let (gtx, grx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        threads.spawn(async move {
            let _guard = Guard(gtx);
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await
        });
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(grx.try_recv().is_err(), "the task runs until the threads stop");
        drop(threads);
        assert_eq!(grx.recv_timeout(Duration::from_secs(5)), Ok("dropped"));
    }
}
