//! Busy polling: while relayed requests come and go one at a time, a runtime worker stays
//! busy for a short window instead of sleeping.
//!
//! A relayed request crosses processes six times (kubectl → server → agent → API server →
//! agent → server → kubectl); each crossing wakes the process it reaches. On a virtual
//! machine, waking a process on an idle vCPU costs the hypervisor's exit from halt, tens of
//! microseconds — about as much as the relay's own work per hop. Keeping the worker, and
//! the vCPU under it, busy for a moment after each request turns those into plain context
//! switches: the answer, or the next request, finds the process running or its CPU awake.
//!
//! The window starts again when a request is sent on ([`BusyPoll::request`]) and when its
//! answer comes back, and ends `window` after the last of these: an idle server or agent
//! does not spin. Nor does a busy one: with more than [`MAX_AWAITING`] requests awaiting
//! their answers, the answers wake the process often enough, and the spin would only take
//! CPU time from the work. Each turn of the loop yields the thread to the kernel (`sched_yield`), so a process
//! woken onto the same vCPU gets it at once instead of waiting for the spinning thread, and
//! then yields the worker to the runtime, which runs its other tasks (and, when this
//! worker holds the I/O driver, polls it) before running the loop again.
//!
//! Spinning spends CPU time, so a process with a CPU quota (a cgroup's `cpu.max`, systemd's
//! `CPUQuota=`, a container's CPU limit) does not do it unless told to: the spin would use
//! up the quota and the process would be throttled.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The window when none is configured and the process has no CPU quota.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(300);

/// The longest window accepted (`--busy-poll-us`).
pub const MAX_WINDOW_US: u64 = 10_000;

/// The most requests awaiting answers at which the loop spins. (On 2 vCPUs, with a limit of
/// one, 4 clients seldom let the loop spin and got ~88 % of `kubectl proxy`'s requests/s,
/// against ~100 % with four; at 16 clients the loop seldom runs with either.)
pub const MAX_AWAITING: u64 = 4;

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
    /// Turns of the loop so far.
    turns: AtomicU64,
}

impl BusyPoll {
    /// Busy polling for `window` after each request and answer; off for a zero window.
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
            turns: AtomicU64::new(0),
        })))
    }

    /// The configured window in microseconds, else the [`default_window`]; says which.
    pub fn configured(window_us: Option<u64>) -> Self {
        let poll = match window_us {
            Some(us) => Self::new(Duration::from_micros(us)),
            None => Self::new(default_window()),
        };
        match (poll.window().as_micros(), window_us) {
            (0, None) => tracing::info!(
                "busy polling is off: this process has a CPU quota (--busy-poll-us turns it on)"
            ),
            (0, Some(_)) => tracing::info!("busy polling is off"),
            (us, _) => tracing::info!(
                window_us = us,
                "busy polling after relayed requests (--busy-poll-us 0 turns it off)"
            ),
        }
        poll
    }

    pub fn window(&self) -> Duration {
        self.0.as_ref().map_or(Duration::ZERO, |i| i.window)
    }

    /// A request sent on to the next hop: the window starts, and the request counts as
    /// awaiting its answer until the guard is dropped, which starts the window again.
    pub fn request(&self) -> Awaiting {
        if let Some(inner) = &self.0 {
            inner.awaiting.fetch_add(1, SeqCst);
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
            inner.spinning.store(false, SeqCst);
        });
    }

    /// Turns of the loop so far (0 when off).
    pub fn turns(&self) -> u64 {
        self.0.as_ref().map_or(0, |i| i.turns.load(SeqCst))
    }

    #[cfg(test)]
    fn spinning(&self) -> bool {
        self.0.as_ref().is_some_and(|i| i.spinning.load(SeqCst))
    }
}

/// A request awaiting its answer (see [`BusyPoll::request`]).
pub struct Awaiting(Option<Arc<Inner>>);

impl Drop for Awaiting {
    fn drop(&mut self) {
        if let Some(inner) = &self.0 {
            inner.awaiting.fetch_sub(1, SeqCst);
            inner.touch();
        }
    }
}

/// Whether the loop spins: within `window` of the last touch and not busy.
fn should_spin(since_last: Duration, awaiting: u64, window: Duration) -> bool {
    since_last <= window && awaiting <= MAX_AWAITING
}

impl Inner {
    /// (Sequentially consistent, as is the loop's side: each stores one flag and then
    /// reads the other's, and a weaker order could let both miss the other's store.)
    fn touch(&self) {
        self.last.fetch_max(self.now(), SeqCst);
        if !self.spinning.load(SeqCst) && self.awaiting.load(SeqCst) <= MAX_AWAITING {
            self.start.notify_one();
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn spin_now(&self) -> bool {
        let since = self.now().saturating_sub(self.last.load(SeqCst));
        should_spin(
            Duration::from_nanos(since),
            self.awaiting.load(SeqCst),
            self.window,
        )
    }

    async fn run(&self) {
        loop {
            self.start.notified().await;
            self.spinning.store(true, SeqCst);
            loop {
                while self.spin_now() {
                    self.turns.fetch_add(1, SeqCst);
                    std::thread::yield_now();
                    tokio::task::yield_now().await;
                }
                self.spinning.store(false, SeqCst);
                // A touch that saw the flag still set did not notify: look once more.
                if !self.spin_now() {
                    break;
                }
                self.spinning.store(true, SeqCst);
            }
        }
    }
}

/// [`DEFAULT_WINDOW`], or none when this process has a CPU quota.
pub fn default_window() -> Duration {
    if has_cpu_quota() {
        Duration::ZERO
    } else {
        DEFAULT_WINDOW
    }
}

/// Whether this process runs under a CPU quota: its own cgroup's `cpu.max` (cgroup v2: a
/// systemd service's `CPUQuota=`, a container with its own cgroup namespace), or fewer
/// CPUs available to it than its affinity allows, which the standard library works out
/// from the quotas of cgroup v1 and v2 and of the cgroups above. (That count rounds down
/// to at least one CPU, so on a one-CPU machine only `cpu.max` shows a quota of half a CPU.)
fn has_cpu_quota() -> bool {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if own_cpu_max(&own, Path::new("/sys/fs/cgroup")).is_some() {
        return true;
    }
    let allowed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| allowed_cpus(&s));
    let available = std::thread::available_parallelism().map_or(0, usize::from);
    allowed.is_some_and(|n| available > 0 && available < n)
}

/// The cgroup v2 quota (as a fraction of CPUs) of the cgroup named in `proc_cgroup`
/// (`/proc/self/cgroup`'s text), read below `root`, if it has one.
fn own_cpu_max(proc_cgroup: &str, root: &Path) -> Option<f64> {
    let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let text = std::fs::read_to_string(root.join(path.trim_start_matches('/')).join("cpu.max"));
    parse_cpu_max(&text.ok()?)
}

/// cgroup v2 `cpu.max`: `max 100000` is no quota, `50000 100000` half a CPU.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok().filter(|q: &f64| *q > 0.0)?;
    let period: f64 = parts.next().unwrap_or("100000").parse().ok()?;
    (period > 0.0).then_some(quota / period)
}

/// The CPUs in `Cpus_allowed_list` of `/proc/self/status`'s text (e.g. `0-3,6`).
fn allowed_cpus(status: &str) -> Option<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut count = 0;
    for range in list.split(',').filter(|r| !r.is_empty()) {
        count += match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => range.parse::<usize>().map(|_| 1).ok()?,
        };
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits for the loop to stop, checks that it does not turn again for a while, and
    /// returns its turns.
    async fn stays_asleep(poll: &BusyPoll, why: &str) -> u64 {
        until(|| !poll.spinning()).await;
        let turns = poll.turns();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(poll.turns(), turns, "{why}");
        turns
    }

    #[test]
    fn the_loop_spins_within_the_window_while_few_requests_await() {
        let window = Duration::from_micros(300);
        assert!(should_spin(Duration::ZERO, 0, window));
        assert!(should_spin(window, MAX_AWAITING, window));
        assert!(!should_spin(window + Duration::from_nanos(1), 0, window));
        assert!(!should_spin(Duration::ZERO, MAX_AWAITING + 1, window));
    }

    /// The window is long, so the loop stops only for the reason each step gives it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_runs_with_few_requests_awaiting_and_not_with_more() {
        let poll = BusyPoll::new(Duration::from_secs(60));
        let stop = CancellationToken::new();
        poll.spawn(stop.clone());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(poll.turns(), 0, "no traffic, no spinning");

        let few: Vec<_> = (0..MAX_AWAITING).map(|_| poll.request()).collect();
        until(|| poll.spinning() && poll.turns() > 0).await;
        let one_more = poll.request();
        let busy = stays_asleep(&poll, "too many requests awaiting: no spinning").await;
        drop(one_more);
        until(|| poll.turns() > busy).await;
        drop(few);
        assert!(poll.spinning(), "answered: the window starts again");
        stop.cancel();
        until(|| !poll.spinning()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_sleeps_after_the_window() {
        let poll = BusyPoll::new(Duration::from_millis(50));
        poll.spawn(CancellationToken::new());
        // Traffic until the loop has turned (on a loaded machine it may start late).
        until(|| {
            drop(poll.request());
            poll.turns() > 0
        })
        .await;
        stays_asleep(&poll, "no traffic after the window: no spinning").await;
    }

    #[tokio::test]
    async fn zero_is_off() {
        let poll = BusyPoll::new(Duration::ZERO);
        poll.spawn(CancellationToken::new());
        drop(poll.request());
        tokio::task::yield_now().await;
        assert_eq!(poll.turns(), 0);
        assert_eq!(BusyPoll::configured(Some(0)).window(), Duration::ZERO);
        assert_eq!(
            BusyPoll::configured(Some(150)).window(),
            Duration::from_micros(150)
        );
        assert_eq!(BusyPoll::configured(None).window(), default_window());
    }

    #[test]
    fn cpu_quotas_are_read() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 0"), None);
        assert_eq!(parse_cpu_max(""), None);

        let root = tempfile::tempdir().unwrap();
        let leaf = root.path().join("system.slice/ztka.service");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("cpu.max"), "25000 100000\n").unwrap();
        let own = "0::/system.slice/ztka.service\n";
        assert_eq!(own_cpu_max(own, root.path()), Some(0.25));
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(own_cpu_max(own, root.path()), None);
        assert_eq!(own_cpu_max("0::/nowhere\n", root.path()), None);
        // A container in its own cgroup namespace sees its cgroup as the root.
        std::fs::write(root.path().join("cpu.max"), "100000 100000\n").unwrap();
        assert_eq!(own_cpu_max("0::/\n", root.path()), Some(1.0));
        // cgroup v1 lines are left to the standard library's count.
        assert_eq!(
            own_cpu_max("4:cpu,cpuacct:/docker/abc\n", root.path()),
            None
        );

        assert_eq!(
            allowed_cpus("Name:\tztka\nCpus_allowed_list:\t0-3,6\n"),
            Some(5)
        );
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t1\n"), Some(1));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t3-1\n"), None);
        assert_eq!(allowed_cpus("Name:\tztka\n"), None);
        let here = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(allowed_cpus(&here).is_some_and(|n| n >= 1));
    }
}
