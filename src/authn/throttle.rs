//! Login throttling per user name and per client address: after a few failures each attempt
//! is slowed down, after more the key is locked out for a while. Successful sign-in clears
//! the user's counter. Unknown and known user names are throttled alike.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures counted within this window.
    pub window: Duration,
    /// From this many failures on, each attempt waits `delay_step` × (failures − slow_after).
    pub slow_after: u32,
    pub delay_step: Duration,
    pub max_delay: Duration,
    /// This many failures lock the key for `lockout`.
    pub lock_after: u32,
    pub lockout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            slow_after: 3,
            delay_step: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            lock_after: 10,
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead after waiting this long.
    Proceed(Duration),
    /// Refuse without checking the password.
    Locked,
}

pub struct Throttle {
    policy: Policy,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verdict for an attempt touching all `keys` (e.g. `user:alice`, `ip:10.0.0.1`).
    pub fn check(&self, keys: &[String]) -> Verdict {
        let now = Instant::now();
        let mut entries = self.entries();
        let mut delay = Duration::ZERO;
        for key in keys {
            let Some(e) = entries.get_mut(key) else {
                continue;
            };
            if let Some(until) = e.locked_until {
                if until > now {
                    return Verdict::Locked;
                }
                *e = Entry {
                    failures: 0,
                    since: now,
                    locked_until: None,
                };
            }
            if now.duration_since(e.since) > self.policy.window {
                e.failures = 0;
                e.since = now;
            }
            if e.failures >= self.policy.slow_after {
                let steps = e.failures - self.policy.slow_after + 1;
                delay = delay.max((self.policy.delay_step * steps).min(self.policy.max_delay));
            }
        }
        Verdict::Proceed(delay)
    }

    pub fn failure(&self, keys: &[String]) {
        let now = Instant::now();
        let mut entries = self.entries();
        if entries.len() > 100_000 {
            // Bound memory under a spray of distinct names: forget stale entries.
            let window = self.policy.window;
            entries.retain(|_, e| {
                now.duration_since(e.since) < window || e.locked_until.is_some_and(|u| u > now)
            });
        }
        for key in keys {
            let e = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                since: now,
                locked_until: None,
            });
            e.failures += 1;
            if e.failures >= self.policy.lock_after {
                e.locked_until = Some(now + self.policy.lockout);
            }
        }
    }

    pub fn success(&self, key: &str) {
        self.entries().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slows_down_then_locks_out() {
        let t = Throttle::new(Policy {
            lock_after: 5,
            ..Policy::default()
        });
        let keys = vec!["user:alice".to_owned(), "ip:1.2.3.4".to_owned()];
        assert_eq!(t.check(&keys), Verdict::Proceed(Duration::ZERO));
        for _ in 0..3 {
            t.failure(&keys);
        }
        assert_eq!(t.check(&keys), Verdict::Proceed(Duration::from_millis(250)));
        t.failure(&keys);
        assert_eq!(t.check(&keys), Verdict::Proceed(Duration::from_millis(500)));
        t.failure(&keys);
        assert_eq!(t.check(&keys), Verdict::Locked);
        // The address is locked for other names too.
        assert_eq!(
            t.check(&["user:bob".into(), "ip:1.2.3.4".into()]),
            Verdict::Locked
        );
        assert_eq!(
            t.check(&["user:bob".into(), "ip:5.6.7.8".into()]),
            Verdict::Proceed(Duration::ZERO)
        );
    }
}
