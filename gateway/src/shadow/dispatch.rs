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
//!   already awake, on its own thread: no system call). The tick itself is two alternating
//!   sleeps ([`Tick`]): re-arming a single one after it fired woke the runtime each time.
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
    let mut tick = Tick::new(POLL_MIN);
    loop {
        let ticked = tokio::select! {
            biased;
            // a mirror finished (or made progress): its place is refilled at once (a lock of the
            // queue's mutex on this thread, no wake-up, no system call); waiting for the tick
            // instead capped a lane at `concurrency` mirrors per tick-rounded latency and
            // dropped mirrors under load
            Some(()) = inflight.next(), if !inflight.is_empty() => false,
            () = tick.next() => true,
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
            tick.rearm(tokio::time::Instant::now(), idle);
        }
    }
}

/// How many sleeps the tick keeps armed: a thread held up for less than `RING - 1` periods still
/// finds one of them pending when it re-arms the others.
const RING: usize = 4;

/// The dispatcher's tick, kept armed periods ahead so that re-arming it does not wake the
/// runtime.
///
/// tokio's timer driver writes its runtime's eventfd when a timer is armed earlier than the
/// earliest one it knew of when it last processed its timers (and "none" is later than any).
/// A single `Sleep` re-armed after it fired is always such a timer: the wheel was empty
/// after the fire, so every tick cost a `write` to the eventfd and an `epoll_wait` return for
/// it, besides the timeout's own return (three system calls per tick; at 1 ms, ~1,000 a second
/// while mirroring). Here [`RING`] sleeps are armed about one period apart: when one fires,
/// the next is still armed, and the fired one is re-armed one period after the last, later
/// than the driver's next wake-up: no eventfd write. One wake-up is still written when the
/// period shrinks to a quarter or less (idle to busy: the next tick is brought forward; the
/// later ones keep their places and the ring reaches the new pace as they fire, within
/// `RING` ticks), and `RING` of them when the thread was held up so long that every sleep had
/// fired.
struct Tick {
    sleeps: [Pin<Box<tokio::time::Sleep>>; RING],
    /// The pending sleep that fires first.
    next: usize,
    /// The period of the last re-arming.
    period: Duration,
}

impl Tick {
    fn new(period: Duration) -> Self {
        let now = tokio::time::Instant::now();
        let mut sleeps: [Pin<Box<tokio::time::Sleep>>; RING] =
            std::array::from_fn(|i| Box::pin(tokio::time::sleep_until(now + period * (i as u32 + 1))));
        // a sleep joins the timer wheel when first polled or reset: all of them now
        for s in &mut sleeps {
            let d = s.deadline();
            s.as_mut().reset(d);
        }
        Tick { sleeps, next: 0, period }
    }

    /// Waits for the next tick.
    async fn next(&mut self) {
        self.sleeps[self.next].as_mut().await
    }

    /// After a tick at `now`: re-arms the sleeps due by then (the one that fired, any the thread
    /// was too late for) one `period` apart after the last pending one, the last of them no
    /// earlier than `RING` periods from now (a tick comes a little later than planned, the timer rounding up to its
    /// 1 ms resolution: a ring re-armed only on its own schedule would fall behind until every
    /// sleep had fired). When the period shrank to a quarter or less (from idle to busy), a
    /// next tick planned later than `now + period` is brought forward to `now + period`.
    fn rearm(&mut self, now: tokio::time::Instant, period: Duration) {
        let pending = |s: &Pin<Box<tokio::time::Sleep>>| s.deadline() > now;
        let Some(last) = self.sleeps.iter().filter(|s| pending(s)).map(|s| s.deadline()).max() else {
            // every sleep has fired (the thread was held up): re-armed from now, each one
            // writing the eventfd (the driver learns of none of them before it parks), once
            for (k, s) in self.sleeps.iter_mut().enumerate() {
                s.as_mut().reset(now + period * (k as u32 + 1));
            }
            self.next = 0;
            return;
        };
        // (not for a period that only halved: busy, the period swings between 1 and 2 ms as
        // ticks find the queue empty or not, and each bringing forward writes the eventfd)
        let first = self.first_pending(now);
        if period * 4 <= self.period && self.sleeps[first].deadline() > now + period {
            self.sleeps[first].as_mut().reset(now + period);
        }
        self.period = period;
        // the due ones go after the pending ones, the last of them `RING` periods from now
        // (no gap longer than a period when several were due at once)
        let due = self.sleeps.iter().filter(|s| s.deadline() <= now).count() as u32;
        let mut latest = last.max(now + period * (RING as u32 - due));
        for s in self.sleeps.iter_mut().filter(|s| s.deadline() <= now) {
            latest += period;
            s.as_mut().reset(latest);
        }
        self.next = self.first_pending(now);
    }

    /// The pending sleep with the earliest deadline (there is one).
    fn first_pending(&self, now: tokio::time::Instant) -> usize {
        (0..RING).filter(|&i| self.sleeps[i].deadline() > now).min_by_key(|&i| self.sleeps[i].deadline()).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Write system calls made by the calling thread so far (Linux: `/proc/thread-self/io`).
    fn thread_writes() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
        io.lines().find_map(|l| l.strip_prefix("syscw: ")).and_then(|v| v.trim().parse().ok()).expect("syscw")
    }

    /// After a tick, the next is the earliest sleep, no two sleeps fire at once, and a period
    /// that shrank to a quarter brings the next tick forward to within one period.
    #[test]
    fn tick_keeps_its_sleeps_armed_periods_ahead() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let ms = Duration::from_millis;
            let mut tick = Tick::new(ms(1));
            for period in [ms(1), ms(2), ms(4), ms(10), ms(10), ms(1), ms(1), ms(2)] {
                tokio::time::timeout(Duration::from_secs(5), tick.next()).await.expect("a tick within 5 s");
                let now = tokio::time::Instant::now();
                let shrunk = period * 4 <= tick.period;
                tick.rearm(now, period);
                let next = tick.sleeps[tick.next].deadline();
                assert!(next > now, "the next tick is ahead");
                if shrunk {
                    assert!(next <= now + period, "brought forward when the period shrank ({period:?})");
                }
                let mut ring: Vec<_> = tick.sleeps.iter().map(|s| s.deadline()).collect();
                ring.sort();
                assert_eq!(ring[0], next, "the next tick is the earliest sleep");
                assert!(ring.windows(2).all(|w| w[0] < w[1]), "no two sleeps at once: {ring:?}");
                assert!(*ring.last().unwrap() >= now + period * RING as u32, "the last RING periods ahead");
                // the thread held up past every sleep: all are re-armed from then on
                if period == ms(10) {
                    let late = now + ms(100);
                    tick.rearm(late, period);
                    assert!(tick.sleeps.iter().all(|s| s.deadline() > late), "all re-armed");
                    assert_eq!(tick.sleeps[tick.next].deadline(), late + period);
                }
            }
        });
    }

    /// The point of [`Tick`]: re-arming the tick does not wake the runtime. A task whose only
    /// work is ticking every millisecond or two makes its thread do no write system calls but
    /// for the times it was held up past every sleep (`RING` writes each, counted here: a busy
    /// machine may hold the test up); a single sleep re-armed after each fire wrote the
    /// runtime's eventfd once per tick.
    #[test]
    fn ticking_writes_no_eventfd() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // a spawned task, as the dispatcher is (waking `block_on`'s own future always unparks)
        let (ring, held_up, single) = rt
            .block_on(rt.spawn(async {
                const TICKS: u64 = 50;
                let mut tick = Tick::new(POLL_MIN);
                let (before, mut held_up) = (thread_writes(), 0);
                for i in 0..TICKS {
                    tick.next().await;
                    let now = tokio::time::Instant::now();
                    held_up += u64::from(tick.sleeps.iter().all(|s| s.deadline() <= now));
                    // as when busy: the period swings between 1 and 2 ms
                    let period = if i % 2 == 0 { POLL_MIN } else { 2 * POLL_MIN };
                    tick.rearm(now, period);
                }
                let ring = thread_writes() - before;
                drop(tick);

                // the previous way, for contrast: one sleep, re-armed after it fired
                let mut one = pin!(tokio::time::sleep(POLL_MIN));
                let before = thread_writes();
                for _ in 0..TICKS {
                    one.as_mut().await;
                    one.as_mut().reset(tokio::time::Instant::now() + POLL_MIN);
                }
                (ring, held_up, thread_writes() - before)
            }))
            .unwrap();
        assert!(single >= 40, "a single re-armed sleep wakes the runtime on every tick: {single} writes");
        assert!(
            ring <= held_up * RING as u64,
            "the ring of sleeps wakes the runtime only when held up past all of them: {ring} writes \
             for 50 ticks, held up {held_up} times"
        );
    }
}
