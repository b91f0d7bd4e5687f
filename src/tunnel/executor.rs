//! Where the control plane's HTTP/2 client runs its per-request futures: on the tunnel's own
//! task.
//!
//! hyper's HTTP/2 client hands two futures per request to its executor: one waits for the
//! response headers and passes them to the caller, another streams a request body. Given
//! to the runtime, each is a new task, and a new task on a multi-threaded runtime wakes an
//! idle worker to steal it, so every relayed request moved between threads (one futex wake
//! and one cold wake-up of a second worker). [`TunnelTasks`] runs them inside the tunnel's
//! task instead, next to the connection that drives them: the frames that finish them are
//! read by that same task, which then polls them at once.
//!
//! It is a small executor nested in one task: futures woken while the task is polling are
//! polled in the same turn, without waking the task again (a task that wakes itself while
//! running is rescheduled as a yield, which also wakes an idle worker); futures woken from
//! elsewhere wake the task.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Rounds (the driven future, then every ready task) in one poll before the tunnel's task
/// gives the worker back to other tasks.
const ROUNDS_PER_POLL: usize = 16;

/// The tunnel task's side: drives the tunnel's future and every future spawned on its
/// [`TunnelExecutor`]. Dropping it drops the futures not finished yet.
pub struct TunnelTasks {
    shared: Arc<Shared>,
    /// Wakes the driven future: sets [`Shared::driven_woken`].
    driven_waker: Waker,
    /// The futures one round polls, swapped out of [`Shared::ready`] (its buffer is kept, so
    /// a round allocates nothing).
    running: VecDeque<Arc<Spawned>>,
}

/// hyper's side: an executor that queues futures on the tunnel's task. After the tunnel's
/// task ended, what it is given is dropped (as the tunnel's end drops the rest).
#[derive(Clone)]
pub struct TunnelExecutor {
    shared: Weak<Shared>,
}

struct Shared {
    /// Spawned futures woken and not polled since.
    ready: Mutex<VecDeque<Arc<Spawned>>>,
    /// Every spawned future not finished: dropped with the tunnel. (A future waiting on the
    /// connection is owned only by the waker it left there, inside the connection that it
    /// holds itself.)
    live: Mutex<HashMap<u64, Arc<Spawned>>>,
    next_id: AtomicU64,
    /// Whether the driven future was woken since it was last polled.
    driven_woken: AtomicBool,
    /// Whether the tunnel's task is in its poll: then wakes need not wake it.
    polling: AtomicBool,
    /// The tunnel task's waker from its last poll; taken by the first wake after it.
    waker: Mutex<Option<Waker>>,
}

struct Spawned {
    id: u64,
    future: Mutex<Option<Task>>,
    /// In [`Shared::ready`] already.
    queued: AtomicBool,
    shared: Weak<Shared>,
}

struct DrivenWake(Weak<Shared>);

impl TunnelTasks {
    pub fn new() -> (Self, TunnelExecutor) {
        let shared = Arc::new(Shared {
            ready: Mutex::new(VecDeque::new()),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            driven_woken: AtomicBool::new(true),
            polling: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        let executor = TunnelExecutor {
            shared: Arc::downgrade(&shared),
        };
        let driven_waker = Waker::from(Arc::new(DrivenWake(Arc::downgrade(&shared))));
        (
            Self {
                shared,
                driven_waker,
                running: VecDeque::new(),
            },
            executor,
        )
    }

    /// Polls `future` and the spawned futures until `future` finishes.
    pub async fn drive<F: Future>(&mut self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| self.poll_round(future.as_mut(), cx)).await
    }

    /// Polls the spawned futures, with nothing else to drive, until none is left.
    pub async fn finish(&mut self) {
        std::future::poll_fn(|cx| {
            let nothing = std::pin::pin!(std::future::pending::<()>());
            let _ = self.poll_round(nothing, cx);
            if lock(&self.shared.live).is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn poll_round<F: Future>(
        &mut self,
        mut future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        let shared = &*self.shared;
        let running = &mut self.running;
        {
            let mut waker = lock(&shared.waker);
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        shared.polling.store(true, SeqCst);
        for _ in 0..ROUNDS_PER_POLL {
            if shared.driven_woken.swap(false, SeqCst) {
                let mut driven_cx = Context::from_waker(&self.driven_waker);
                if let Poll::Ready(out) = future.as_mut().poll(&mut driven_cx) {
                    shared.polling.store(false, SeqCst);
                    return Poll::Ready(out);
                }
            }
            // The futures ready now; those they wake run in the next round.
            std::mem::swap(&mut *lock(&shared.ready), running);
            for task in running.drain(..) {
                task.run(shared);
            }
            if !shared.has_work() {
                shared.polling.store(false, SeqCst);
                // A wake from another thread between the check and the store saw
                // `polling` still set and left the waking to this poll.
                if !shared.has_work() {
                    return Poll::Pending;
                }
                shared.polling.store(true, SeqCst);
            }
        }
        // Still busy: let the worker run other tasks, then come back.
        shared.polling.store(false, SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for TunnelTasks {
    fn drop(&mut self) {
        let live: Vec<_> = lock(&self.shared.live).drain().map(|(_, t)| t).collect();
        lock(&self.shared.ready).clear();
        // Dropping a future can wake others; no lock is held meanwhile.
        for task in live {
            let future = lock(&task.future).take();
            drop(future);
        }
    }
}

impl<F> hyper::rt::Executor<F> for TunnelExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let id = shared.next_id.fetch_add(1, SeqCst);
        let task = Arc::new(Spawned {
            id,
            future: Mutex::new(Some(Box::pin(async move {
                future.await;
            }))),
            queued: AtomicBool::new(true),
            shared: Arc::downgrade(&shared),
        });
        lock(&shared.live).insert(id, task.clone());
        lock(&shared.ready).push_back(task);
        shared.wake_task();
    }
}

impl Shared {
    fn has_work(&self) -> bool {
        self.driven_woken.load(SeqCst) || !lock(&self.ready).is_empty()
    }

    /// Wakes the tunnel's task unless it is polling (and so sees the work itself).
    fn wake_task(&self) {
        if !self.polling.load(SeqCst)
            && let Some(waker) = lock(&self.waker).take()
        {
            waker.wake();
        }
    }
}

impl Spawned {
    fn run(self: Arc<Self>, shared: &Shared) {
        // Cleared first: a wake while polling queues it again.
        self.queued.store(false, SeqCst);
        let waker = Waker::from(self.clone());
        let mut slot = lock(&self.future);
        let Some(future) = slot.as_mut() else {
            return;
        };
        if future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            *slot = None;
            drop(slot);
            lock(&shared.live).remove(&self.id);
        }
    }
}

impl Wake for Spawned {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, SeqCst) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.ready).push_back(self.clone());
            shared.wake_task();
        }
    }
}

impl Wake for DrivenWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.0.upgrade() {
            shared.driven_woken.store(true, SeqCst);
            shared.wake_task();
        }
    }
}

/// The locks guard plain queues that no code path leaves half-changed, so a poisoned one is
/// still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawned_futures_run_on_the_driving_task_and_other_tasks_wake_them() {
        let (mut tasks, exec) = TunnelTasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u32>();
        let ran_in = Arc::new(Mutex::new(Vec::new()));
        let seen = ran_in.clone();
        hyper::rt::Executor::execute(&exec, async move {
            seen.lock().unwrap().push(tokio::task::try_id());
            // Woken by another task, on whichever worker.
            let v = rx.await.unwrap();
            seen.lock().unwrap().push(tokio::task::try_id());
            done_tx.send(v + 1).unwrap();
        });
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx.send(41).unwrap();
        });
        let driver = tokio::spawn(async move {
            let got = tasks.drive(done_rx).await.unwrap();
            (got, tokio::task::id())
        });
        let (got, driver_id) = tokio::time::timeout(std::time::Duration::from_secs(10), driver)
            .await
            .expect("a wake from another task reached the driving task")
            .unwrap();
        assert_eq!(got, 42);
        assert_eq!(*ran_in.lock().unwrap(), vec![Some(driver_id); 2]);
    }

    #[tokio::test]
    async fn work_woken_while_driving_finishes_in_the_same_poll() {
        let (mut tasks, exec) = TunnelTasks::new();
        let driven = async {
            let (tx, rx) = tokio::sync::oneshot::channel::<&str>();
            // Spawned from the driven future; it wakes the driven future in turn.
            hyper::rt::Executor::execute(&exec, async move {
                tx.send("done").unwrap();
            });
            rx.await.unwrap()
        };
        let mut drive = std::pin::pin!(tasks.drive(driven));
        let woken = Arc::new(Counter::default());
        let waker = Waker::from(woken.clone());
        let first = drive.as_mut().poll(&mut Context::from_waker(&waker));
        assert_eq!(first, Poll::Ready("done"), "one poll of the tunnel's task");
        assert_eq!(woken.0.load(SeqCst), 0, "the task never woke itself");
    }

    #[derive(Default)]
    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[tokio::test]
    async fn dropping_the_tasks_drops_unfinished_futures_and_later_ones() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, SeqCst);
            }
        }
        let (mut tasks, exec) = TunnelTasks::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        // Like a request waiting on the connection, it keeps its own waker (a cycle that
        // only the drop of the tasks breaks).
        let kept: Mutex<Option<Waker>> = Mutex::new(None);
        hyper::rt::Executor::execute(
            &exec,
            std::future::poll_fn(move |cx| {
                let _flag = &flag;
                *kept.lock().unwrap() = Some(cx.waker().clone());
                Poll::<()>::Pending
            }),
        );
        tasks.drive(tokio::task::yield_now()).await;
        assert!(!dropped.load(SeqCst), "still waiting");
        drop(tasks);
        assert!(dropped.load(SeqCst), "dropped with the tunnel");
        let late = Arc::new(AtomicBool::new(false));
        let flag = Flag(late.clone());
        hyper::rt::Executor::execute(&exec, async move {
            let _flag = flag;
        });
        assert!(late.load(SeqCst), "given after the end: dropped at once");
    }

    #[tokio::test]
    async fn finish_returns_once_the_spawned_futures_are_done() {
        let (mut tasks, exec) = TunnelTasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        hyper::rt::Executor::execute(&exec, async move {
            rx.await.unwrap();
            d.store(true, SeqCst);
        });
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx.send(()).unwrap();
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), tasks.finish())
            .await
            .expect("finish ends when the last spawned future does");
        assert!(done.load(SeqCst));
    }

    #[tokio::test]
    async fn a_future_that_always_wakes_itself_does_not_hold_the_worker() {
        let (mut tasks, exec) = TunnelTasks::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        hyper::rt::Executor::execute(
            &exec,
            std::future::poll_fn(move |cx| {
                p.fetch_add(1, SeqCst);
                cx.waker().wake_by_ref();
                Poll::<()>::Pending
            }),
        );
        let mut drive = std::pin::pin!(tasks.drive(std::future::pending::<()>()));
        let woken = Arc::new(Counter::default());
        let waker = Waker::from(woken.clone());
        assert!(
            drive
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(polls.load(SeqCst), ROUNDS_PER_POLL, "one poll per round");
        assert_eq!(woken.0.load(SeqCst), 1, "then the task yields");
    }
}
