//! Busy polling: while relayed requests come and go, one runtime worker keeps polling for
//! I/O for a short window instead of sleeping.
//!
//! A relayed request crosses processes six times (kubectl → server → agent → API server →
//! agent → server → kubectl); each crossing wakes the process it reaches. On a virtual
//! machine, waking a process on an idle vCPU costs the hypervisor's exit from halt, tens of
//! microseconds — about as much as the relay's own work per hop. Keeping the vCPU busy for a
//! moment after each request turns those into plain context switches: the answer, or the
//! next request, finds the process still running.
//!
//! The window starts again when a request is sent on ([`BusyPoll::request`]) and when its
//! answer comes back, and ends `window` after the last of these: an idle server or agent
//! does not spin. Nor does a busy one: with more than one request awaiting its answer, the
//! answers wake the process often enough, and the spin would only take CPU time from the
//! work. Each turn of the loop yields the thread to the kernel (`sched_yield`), so a process
//! woken onto the same vCPU runs at once instead of waiting for the spinning thread, and
//! then yields the worker to the runtime, which polls for I/O before running the loop again.
//!
//! Spinning spends CPU time, so a process whose cgroup has a CPU quota (`cpu.max`, or
//! `cpu.cfs_quota_us` on cgroup v1) does not do it unless told to: the spin would use up the
//! quota and the process would be throttled.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The window when none is configured and the process has no CPU quota.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(300);

/// The longest window accepted (`--busy-poll-us`).
pub const MAX_WINDOW_US: u64 = 10_000;

/// The most requests awaiting answers at which the loop spins.
const MAX_AWAITING: u64 = 1;

/// A handle to the busy-poll loop; cheap to clone. Disabled, it does nothing.
#[derive(Clone, Default)]
pub struct BusyPoll(Option<Arc<Inner>>);

struct Inner {
    window: Duration,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last touch.
    last: AtomicU64,
    /// Requests sent on and not answered yet.
    awaiting: AtomicU64,
    /// The loop is spinning: a touch needs only move `last`.
    spinning: AtomicBool,
    start: Notify,
    #[cfg(test)]
    turns: AtomicU64,
}

impl BusyPoll {
    /// Busy polling for `window` after each touch; off for a zero window.
    pub fn new(window: Duration) -> Self {
        if window.is_zero() {
            return Self(None);
        }
        Self(Some(Arc::new(Inner {
            window,
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            awaiting: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            start: Notify::new(),
            #[cfg(test)]
            turns: AtomicU64::new(0),
        })))
    }

    /// The configured window in microseconds, else the [`default_window`].
    pub fn configured(window_us: Option<u64>) -> Self {
        match window_us {
            Some(us) => Self::new(Duration::from_micros(us)),
            None => {
                let window = default_window();
                if window.is_zero() {
                    tracing::info!(
                        "busy polling is off: this process has a CPU quota (set --busy-poll-us to turn it on)"
                    );
                }
                Self::new(window)
            }
        }
    }

    pub fn window(&self) -> Duration {
        self.0.as_ref().map_or(Duration::ZERO, |i| i.window)
    }

    /// A request sent on to the next hop: the window starts, and the request counts as
    /// awaiting its answer until the guard is dropped, which starts the window again.
    pub fn request(&self) -> Awaiting {
        if let Some(inner) = &self.0 {
            inner.awaiting.fetch_add(1, Relaxed);
            inner.touch();
        }
        Awaiting(self.0.clone())
    }

    /// Starts the loop on the runtime; it ends with `stop`.
    pub fn spawn(&self, stop: CancellationToken) {
        let Some(inner) = self.0.clone() else { return };
        tokio::spawn(async move {
            tokio::select! {
                () = inner.run() => {}
                () = stop.cancelled() => {}
            }
            inner.spinning.store(false, Relaxed);
        });
    }

    #[cfg(test)]
    fn spinning(&self) -> bool {
        self.0.as_ref().is_some_and(|i| i.spinning.load(Relaxed))
    }

    #[cfg(test)]
    fn turns(&self) -> u64 {
        self.0.as_ref().map_or(0, |i| i.turns.load(Relaxed))
    }
}

/// A request awaiting its answer (see [`BusyPoll::request`]).
pub struct Awaiting(Option<Arc<Inner>>);

impl Drop for Awaiting {
    fn drop(&mut self) {
        if let Some(inner) = &self.0 {
            inner.awaiting.fetch_sub(1, Relaxed);
            inner.touch();
        }
    }
}

impl Inner {
    fn touch(&self) {
        self.last.store(self.now(), Relaxed);
        if !self.spinning.load(Relaxed) && self.awaiting.load(Relaxed) <= MAX_AWAITING {
            self.start.notify_one();
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether to spin: within the window, and not busy.
    fn within_window(&self) -> bool {
        let since = self.now().saturating_sub(self.last.load(Relaxed));
        since <= u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX)
            && self.awaiting.load(Relaxed) <= MAX_AWAITING
    }

    async fn run(&self) {
        loop {
            self.start.notified().await;
            self.spinning.store(true, Relaxed);
            loop {
                while self.within_window() {
                    #[cfg(test)]
                    self.turns.fetch_add(1, Relaxed);
                    std::thread::yield_now();
                    tokio::task::yield_now().await;
                }
                self.spinning.store(false, Relaxed);
                // A touch that saw the flag still set did not notify: look once more.
                if !self.within_window() {
                    break;
                }
                self.spinning.store(true, Relaxed);
            }
        }
    }
}

/// [`DEFAULT_WINDOW`], or none when this process's cgroup has a CPU quota.
pub fn default_window() -> Duration {
    if cpu_quota().is_some() {
        Duration::ZERO
    } else {
        DEFAULT_WINDOW
    }
}

/// The CPU quota of this process's cgroup as a fraction of CPUs, if it has one.
fn cpu_quota() -> Option<f64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    quota_in(&own, Path::new("/sys/fs/cgroup"))
}

/// The quota of the cgroup named in `proc_cgroup` (`/proc/self/cgroup`'s text), read below
/// `root`: cgroup v2's `cpu.max`, else v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
fn quota_in(proc_cgroup: &str, root: &Path) -> Option<f64> {
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            let text = std::fs::read_to_string(root.join(rel).join("cpu.max")).ok();
            if let Some(q) = text.as_deref().and_then(parse_cpu_max) {
                return Some(q);
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            for mount in ["cpu,cpuacct", "cpu"] {
                let dir = root.join(mount).join(rel);
                let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
                if let (Some(quota), Some(period)) =
                    (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us"))
                    && let Some(q) = parse_quota(quota.trim(), period.trim())
                {
                    return Some(q);
                }
            }
        }
    }
    None
}

/// cgroup v2 `cpu.max`: `max 100000` is no quota, `50000 100000` half a CPU.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    parse_quota(parts.next()?, parts.next().unwrap_or("100000"))
}

fn parse_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.parse().ok().filter(|q: &f64| *q > 0.0)?;
    let period: f64 = period.parse().ok().filter(|p: &f64| *p > 0.0)?;
    Some(quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_start_the_window_then_the_loop_sleeps() {
        let poll = BusyPoll::new(Duration::from_millis(20));
        let stop = CancellationToken::new();
        poll.spawn(stop.clone());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(poll.turns(), 0, "no traffic, no spinning");

        drop(poll.request());
        until(|| poll.turns() > 0).await;
        until(|| !poll.spinning()).await;
        let after_first = poll.turns();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            poll.turns(),
            after_first,
            "the loop sleeps after the window"
        );

        // Busy: with two requests awaiting answers the loop does not spin.
        // (The first may start the loop for a turn before the second counts.)
        let (a, b) = (poll.request(), poll.request());
        until(|| !poll.spinning()).await;
        let busy = poll.turns();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(poll.turns(), busy, "two requests awaiting: no spinning");
        // One answered: one awaiting, within the window again.
        drop(a);
        until(|| poll.turns() > busy).await;
        drop(b);
        stop.cancel();
        until(|| !poll.spinning()).await;
    }

    #[tokio::test]
    async fn zero_is_off() {
        let poll = BusyPoll::new(Duration::ZERO);
        poll.spawn(CancellationToken::new());
        drop(poll.request());
        assert_eq!(poll.window(), Duration::ZERO);
        assert!(!poll.spinning());
        assert_eq!(BusyPoll::configured(Some(0)).window(), Duration::ZERO);
        assert_eq!(
            BusyPoll::configured(Some(150)).window(),
            Duration::from_micros(150)
        );
    }

    #[test]
    fn cpu_quotas_are_read_from_cgroup_v2_and_v1() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2.0));
        assert_eq!(parse_quota("-1", "100000"), None);
        assert_eq!(parse_cpu_max(""), None);

        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("kubepods/pod1/c1");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cpu.max"), "25000 100000\n").unwrap();
        assert_eq!(quota_in("0::/kubepods/pod1/c1\n", root.path()), Some(0.25));
        std::fs::write(v2.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(quota_in("0::/kubepods/pod1/c1\n", root.path()), None);
        assert_eq!(quota_in("0::/nowhere\n", root.path()), None);

        let v1 = root.path().join("cpu,cpuacct/docker/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("cpu.cfs_quota_us"), "150000\n").unwrap();
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n";
        assert_eq!(quota_in(text, root.path()), Some(1.5));
        std::fs::write(v1.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        assert_eq!(quota_in(text, root.path()), None);
    }
}
