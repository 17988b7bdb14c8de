//! A lane's dispatcher: ONE task per route queue, on a shadow thread, that takes jobs from the
//! queue and runs up to `concurrency` mirrors at once inside itself, and the deadline of each.
//!
//! What it saves, per mirror, against a task, a semaphore permit and a `tokio::time::timeout`
//! per mirror: tokio's timer driver writes its runtime's eventfd (a system call, and an extra
//! `epoll_wait` return on the next park) whenever a timer is registered earlier than the wake-up
//! it planned at its last park, and "no timer" counts as later than any; a per-mirror timeout
//! registered when no other timer was pending did exactly that. Here the lane has a single
//! timer, its tick:
//! - **Hand-off by polling.** The proxy thread only pushes under the queue's mutex (no wake-up,
//!   no system call); on each tick (every 1 ms while busy: a job was taken or every place is
//!   taken; backing off to 10 ms when idle) the dispatcher takes every job there is, up to the
//!   free concurrency, and starts them together. When busy, one wake-up carries many mirrors.
//!   A place freed by a finished mirror is refilled at once from the queue (the dispatcher is
//!   already awake, on its own thread: no system call).
//! - **Deadlines without a timer each.** A mirror's deadline is an `Instant`; its sends check
//!   it when polled ([`until`]), and on each tick the dispatcher wakes the mirrors past it so
//!   that they are polled and give up. A deadline is thus enforced within one tick (≤ 10 ms).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::lane::{Job, LaneQueue};

/// The dispatcher's tick while busy (the longest a queued job waits for a free place) and when
/// idle (it doubles from one to the other).
pub(crate) const POLL_MIN: Duration = Duration::from_millis(1);
pub(crate) const POLL_MAX: Duration = Duration::from_millis(10);

/// Serves `queue` until the lane is gone and its queue is drained: `mirror(job, deadline)` is
/// the mirror of one job, to be finished (or given up) by `deadline` (`timeout` of the job's
/// route after it was taken). At most `concurrency` run at once.
pub(crate) async fn run<F, M>(queue: Arc<LaneQueue>, concurrency: usize, mut mirror: F)
where
    F: FnMut(Job, Instant) -> M,
    M: Future<Output = ()>,
{
    let concurrency = concurrency.max(1);
    let mut inflight: FuturesUnordered<InFlight<M>> = FuturesUnordered::new();
    let mut taken = Vec::new();
    let mut idle = POLL_MIN;
    let mut tick = pin!(tokio::time::sleep(POLL_MIN));
    loop {
        let ticked = tokio::select! {
            biased;
            // a mirror finished (or made progress): its place is refilled at once (a lock of the
            // queue's mutex on this thread, no wake-up, no system call); waiting for the tick
            // instead capped a lane at `concurrency` mirrors per tick-rounded latency and
            // dropped mirrors under load
            Some(()) = inflight.next(), if !inflight.is_empty() => false,
            () = &mut tick => true,
        };
        let now = Instant::now();
        if ticked {
            for m in inflight.iter_mut() {
                m.wake_if_past(now);
            }
        }
        let room = concurrency - inflight.len();
        if room > 0 {
            queue.pop_into(&mut taken, room);
        }
        if ticked {
            // busy (a job taken, or every place taken) or idle
            idle = if taken.is_empty() && room > 0 { (idle * 2).min(POLL_MAX) } else { POLL_MIN };
        }
        for job in taken.drain(..) {
            let deadline = now + job.route.spec.timeout;
            inflight.push(InFlight { mirror: Box::pin(mirror(job, deadline)), deadline, waker: None });
        }
        if inflight.is_empty() && queue.is_closed() {
            break; // the lane is gone and its queue is drained
        }
        if ticked {
            tick.as_mut().reset((now + idle).into());
        }
    }
}

/// `fut`, or `None` when it is not done by `deadline` (checked whenever it is polled; the
/// dispatcher polls a mirror past its deadline within one tick).
pub(crate) async fn until<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending if Instant::now() >= deadline => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await
}

/// One mirror in flight, with its deadline and the waker it last waited with.
struct InFlight<M> {
    mirror: Pin<Box<M>>,
    deadline: Instant,
    waker: Option<Waker>,
}

impl<M> InFlight<M> {
    /// Wakes the mirror when its deadline has passed, so that it is polled and gives up.
    fn wake_if_past(&mut self, now: Instant) {
        if now >= self.deadline {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }
}

impl<M: Future<Output = ()>> Future for InFlight<M> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match this.mirror.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                // FuturesUnordered gives each future one waker for its life: cloned once
                if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
