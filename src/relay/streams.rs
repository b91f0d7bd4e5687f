//! Open relay responses and upgraded streams, by user, so that revoking a user's access can
//! end them at once instead of when the client lets go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::pki::identity::PeerCertificate;
use uuid::Uuid;

struct Entry {
    user: Uuid,
    project: String,
    /// The client certificate the stream was opened with.
    certificate: Arc<PeerCertificate>,
    /// Its answer stays open (watch, `logs -f`, exec, attach, port-forward).
    lasting: bool,
    token: CancellationToken,
}

#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<u64, Entry>>,
    ids: AtomicU64,
    /// Set at shutdown: lasting streams opened from then on end at once.
    closing: AtomicBool,
}

/// Removes its entry when dropped; `token` is cancelled when access is revoked.
pub struct StreamGuard {
    streams: Arc<Streams>,
    id: u64,
    pub token: CancellationToken,
}

impl StreamGuard {
    /// Whether the server is shutting down, which ends lasting streams (rather than a
    /// change of the user's access).
    pub fn shutting_down(&self) -> bool {
        self.streams.closing.load(Ordering::Relaxed)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.streams.lock().remove(&self.id);
    }
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(
        self: &Arc<Self>,
        user: Uuid,
        project: &str,
        certificate: &Arc<PeerCertificate>,
        lasting: bool,
    ) -> StreamGuard {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut open = self.lock();
        if lasting && self.closing.load(Ordering::Relaxed) {
            token.cancel();
        }
        open.insert(
            id,
            Entry {
                user,
                project: project.to_owned(),
                certificate: certificate.clone(),
                lasting,
                token: token.clone(),
            },
        );
        drop(open);
        StreamGuard {
            streams: self.clone(),
            id,
            token,
        }
    }

    /// Ends every open stream of `user` in a project for which `allowed` says no.
    pub fn close_where(&self, user: Uuid, allowed: impl Fn(&str) -> bool) -> usize {
        self.close(|e| e.user == user && !allowed(&e.project))
    }

    /// Ends every open stream opened with the certificate `serial`.
    pub fn close_serial(&self, serial: &str) -> usize {
        self.close(|e| e.certificate.serial == serial)
    }

    /// At shutdown: ends the streams that would not end by themselves, now and as they
    /// open, so their connections finish (and their audit events are recorded) within the
    /// drain; requests that are only waiting for their answer may finish.
    pub fn close_lasting(&self) -> usize {
        self.closing.store(true, Ordering::Relaxed);
        self.close(|e| e.lasting)
    }

    fn close(&self, matches: impl Fn(&Entry) -> bool) -> usize {
        let mut closed = 0;
        for e in self.lock().values().filter(|e| matches(e)) {
            e.token.cancel();
            closed += 1;
        }
        closed
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// Serials of client certificates revoked one by one (and not expired), which the relay
/// refuses: loaded from the store at start, added to before a revocation is committed.
/// Expired entries are dropped as new ones come.
#[derive(Default)]
pub struct RevokedSerials(std::sync::RwLock<HashMap<String, time::OffsetDateTime>>);

impl RevokedSerials {
    pub fn new(serials: impl IntoIterator<Item = (String, time::OffsetDateTime)>) -> Self {
        Self(std::sync::RwLock::new(serials.into_iter().collect()))
    }

    pub fn contains(&self, serial: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(serial)
    }

    /// Adds a serial until `expires` (when the certificate is void anyway).
    pub fn insert(&self, serial: &str, expires: time::OffsetDateTime) {
        let now = time::OffsetDateTime::now_utc();
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        set.retain(|_, until| *until > now);
        set.insert(serial.to_owned(), expires);
    }

    pub fn remove(&self, serial: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(serial);
    }
}
