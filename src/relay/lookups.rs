//! What the relay reads from the store for each request (the user, the cluster and its
//! project, the user's group names), cached per user and cluster for as long as nothing is
//! written: an entry carries the generation it was read at (the store's plus the
//! authorizer's) and is used only while that is unchanged. Any committed change — a user disabled or revoked, a
//! cluster deleted, a membership changed — makes every entry stale at once; appends to the
//! audit log do not.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::domain::cluster::Cluster;
use crate::domain::org::Project;
use crate::domain::user::User;

/// The user, the cluster, its project, and the names of the user's groups.
pub type Found = (Option<User>, Option<Cluster>, Option<Project>, Vec<String>);

/// Entries kept at most; the cache starts over beyond that.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct Lookups {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    generation: u64,
    map: HashMap<(Uuid, String), Found>,
}

impl Lookups {
    pub fn get(&self, generation: u64, user: Uuid, cluster: &str) -> Option<Found> {
        let e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if e.generation != generation {
            return None;
        }
        e.map.get(&(user, cluster.to_owned())).cloned()
    }

    /// Keeps what was read at `generation` (read before the records were).
    pub fn put(&self, generation: u64, user: Uuid, cluster: &str, found: Found) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if e.generation != generation {
            if generation < e.generation {
                return;
            }
            e.map.clear();
            e.generation = generation;
        }
        if e.map.len() >= MAX_ENTRIES {
            e.map.clear();
        }
        e.map.insert((user, cluster.to_owned()), found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_only_at_their_generation() {
        let l = Lookups::default();
        let u = Uuid::now_v7();
        l.put(3, u, "dev", (None, None, None, vec!["g".into()]));
        assert_eq!(l.get(3, u, "dev").unwrap().3, vec!["g".to_owned()]);
        assert!(l.get(3, u, "prod").is_none());
        assert!(l.get(4, u, "dev").is_none(), "a write since makes it stale");
        l.put(2, u, "prod", (None, None, None, vec![]));
        assert!(
            l.get(2, u, "prod").is_none(),
            "an older read never replaces newer entries"
        );
        l.put(5, u, "prod", (None, None, None, vec![]));
        assert!(
            l.get(5, u, "dev").is_none(),
            "a newer generation starts over"
        );
        assert!(l.get(5, u, "prod").is_some());
    }
}
