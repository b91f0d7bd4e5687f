//! The body of a relayed response: the agent's bytes, passed through frame by frame, counted
//! for the request's audit event (which is recorded once the body has ended, so `bytes` is
//! what the client was sent, chunked and streamed answers included, and `duration` covers
//! the whole answer), and cut with an error when the user's access ends or the server shuts
//! down.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::TaskTracker;

use super::streams::StreamGuard;
use crate::audit::{AuditError, AuditLog, Room};
use crate::domain::audit::{Durability, KubeRequest, NewEvent};

/// Whether nothing is left of a body: a server neither sends nor reads one that is.
pub fn at_end(body: &impl hyper::body::Body) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}

/// A request's audit event, waiting for the size and duration of its answer.
pub struct Record {
    pub audit: AuditLog,
    pub event: NewEvent,
    pub kube: KubeRequest,
    pub started: Instant,
}

impl Record {
    /// The event with its answer's size and duration; `cut` says why the answer ended
    /// early, if it did.
    fn finish(self, bytes: u64, cut: Option<&str>) -> (AuditLog, NewEvent) {
        let Record {
            audit,
            mut event,
            mut kube,
            started,
        } = self;
        kube.bytes = bytes;
        kube.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        event.kube = Some(kube);
        if let Some(cut) = cut {
            match &mut event.details {
                serde_json::Value::Object(map) => {
                    map.insert("ended".into(), cut.into());
                }
                other => *other = serde_json::json!({ "ended": cut }),
            }
        }
        (audit, event)
    }

    /// Appends the event into `room` taken for it.
    fn append_in(self, room: Room, bytes: u64, cut: Option<&str>) {
        let (audit, event) = self.finish(bytes, cut);
        if let Err(e) = audit.append_in(room, event) {
            unrecorded(&e);
        }
    }

    /// Appends the event of an answer that relayed no bytes.
    pub async fn append(self) {
        let (audit, event) = self.finish(0, None);
        if let Err(e) = audit.append(event, Durability::Fast).await {
            unrecorded(&e);
        }
    }
}

fn unrecorded(e: &AuditError) {
    tracing::error!(error = %e, "cannot record a Kubernetes response");
}

type Waiting = Pin<Box<dyn Future<Output = Result<Room, AuditError>> + Send>>;

pub struct RelayBody<B = Incoming> {
    inner: B,
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Keeps the stream registered (so revocation reaches it) until the body is gone.
    guard: StreamGuard,
    /// Bytes handed on to the server so far (and the held frame's).
    bytes: u64,
    record: Option<Record>,
    /// Where a wait for room goes when the body is dropped: a task the shutdown drains.
    tasks: TaskTracker,
    /// Room for the event, when the audit queue was full as the body ended: the end of the
    /// body waits for it, as a stalled audit disk must slow clients down, not grow memory.
    waiting: Option<Waiting>,
    /// The last data frame, held back while `waiting`.
    held: Option<Bytes>,
    ended: bool,
    cut: Option<&'static str>,
}

impl<B> RelayBody<B> {
    pub fn new(inner: B, guard: StreamGuard, record: Record, tasks: TaskTracker) -> Self {
        Self {
            inner,
            revoked: Box::pin(guard.token.clone().cancelled_owned()),
            guard,
            bytes: 0,
            tasks,
            record: Some(record),
            waiting: None,
            held: None,
            ended: false,
            cut: None,
        }
    }

    /// Ends the body and records the event now or, when the audit queue is full, starts
    /// waiting for room.
    fn end(&mut self, cut: Option<&'static str>) {
        self.ended = true;
        self.cut = cut;
        let Some(record) = self.record.take() else {
            return;
        };
        match record.audit.try_room() {
            Some(room) => record.append_in(room, self.bytes, cut),
            None => {
                let audit = record.audit.clone();
                self.waiting = Some(Box::pin(async move { audit.room().await }));
                self.record = Some(record);
            }
        }
    }

    /// Waits for room for the event, if that is still to come, and records it then.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(waiting) = self.waiting.as_mut() {
            let room = ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
            if let Some(record) = self.record.take() {
                match room {
                    Ok(room) => record.append_in(room, self.bytes, self.cut),
                    Err(e) => unrecorded(&e),
                }
            }
        }
        Poll::Ready(())
    }
}

impl<B> hyper::body::Body for RelayBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        ready!(this.poll_waiting(cx));
        if let Some(data) = this.held.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if this.revoked.as_mut().poll(cx).is_ready() {
            let why = if this.guard.shutting_down() {
                "the server shut down"
            } else {
                "access ended"
            };
            // The client sees the stream break; a wait for room goes on in Drop.
            this.end(Some(why));
            return Poll::Ready(Some(Err(io::Error::other(why))));
        }
        loop {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not passed on (nor announced: `trailer` is hop-by-hop).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.bytes += data.len() as u64;
                    // A server stops polling after the last byte of a known length, so the
                    // event is recorded with it, and the byte waits for a full queue.
                    if at_end(&this.inner) {
                        this.end(None);
                        if this.poll_waiting(cx).is_pending() {
                            this.held = Some(data);
                            return Poll::Pending;
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.end(Some("the agent's answer broke off"));
                    return Poll::Ready(Some(Err(io::Error::other(e))));
                }
                None => {
                    this.end(None);
                    ready!(this.poll_waiting(cx));
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only once the event is recorded, so the server polls to the end.
        self.ended && self.waiting.is_none() && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.held, self.ended) {
            (Some(data), _) => SizeHint::with_exact(data.len() as u64),
            (None, true) => SizeHint::with_exact(0),
            (None, false) => self.inner.size_hint(),
        }
    }
}

impl<B> Drop for RelayBody<B> {
    /// A client that goes away before the end still leaves the event, with the bytes it
    /// was sent; a wait for room is left to a task the shutdown drains (the drain cannot
    /// have ended yet: the body holds a stream of the tunnel, whose task it waits for).
    fn drop(&mut self) {
        const LEFT: &str = "the client left";
        if !self.ended {
            self.end(Some(LEFT));
        }
        let Some(record) = self.record.take() else {
            return;
        };
        // A frame held for room never went out.
        let (bytes, cut) = match self.held.take() {
            Some(data) => (self.bytes - data.len() as u64, Some(LEFT)),
            None => (self.bytes, self.cut),
        };
        let waiting = self.waiting.take();
        if tokio::runtime::Handle::try_current().is_err() {
            unrecorded(&AuditError::Closed);
            return;
        }
        self.tasks.spawn(async move {
            let room = match waiting {
                Some(waiting) => waiting.await,
                None => record.audit.room().await,
            };
            match room {
                Ok(room) => record.append_in(room, bytes, cut),
                Err(e) => unrecorded(&e),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::FutureExt as _;
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use hyper::body::Body as _;

    use super::*;
    use crate::audit::AuditOptions;
    use crate::domain::audit::{AuditEvent, AuditQuery, Order, Target};
    use crate::pki::identity::PeerCertificate;
    use crate::relay::streams::Streams;
    use crate::shutdown::Shutdown;
    use crate::store::Store;

    struct Fixture {
        _dir: tempfile::TempDir,
        log: AuditLog,
        streams: Arc<Streams>,
        certificate: Arc<PeerCertificate>,
        tasks: Shutdown,
    }

    /// An audit log whose queue holds `room` events, and whose fast events wait an hour
    /// for a commit (so the queue stays full until a flush).
    fn fixture(room: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let options = AuditOptions {
            queue_capacity: room,
            fast_commit_wait: Duration::from_secs(3600),
            retention_max_age: None,
            ..AuditOptions::default()
        };
        Fixture {
            log: AuditLog::open_with(store, options).unwrap(),
            _dir: dir,
            streams: Arc::new(Streams::default()),
            tasks: Shutdown::new(),
            certificate: Arc::new(PeerCertificate {
                common_name: "u".into(),
                organizations: Vec::new(),
                units: Vec::new(),
                serial: "01".into(),
                not_before: 0,
                not_after: 0,
            }),
        }
    }

    impl Fixture {
        fn body<B>(&self, inner: B) -> (RelayBody<B>, tokio_util::sync::CancellationToken) {
            let guard = self
                .streams
                .open(uuid::Uuid::nil(), "p", &self.certificate, true);
            let token = guard.token.clone();
            let record = Record {
                audit: self.log.clone(),
                event: NewEvent::system("kube.request", Target::default()),
                kube: KubeRequest::default(),
                started: Instant::now(),
            };
            (
                RelayBody::new(inner, guard, record, self.tasks.tracker()),
                token,
            )
        }

        /// After a body was dropped with the queue full (behind one filler event): the
        /// flush makes room, the task the drop left appends, and the event says the client
        /// left after `bytes`.
        async fn left_with(&self, bytes: u64) {
            self.log.flush().await.unwrap();
            assert!(self.tasks.drain(Duration::from_secs(10)).await);
            let events = self.events().await;
            assert_eq!(events.len(), 2, "{events:?}");
            assert_eq!(events[1].event.kube.as_ref().unwrap().bytes, bytes);
            assert_eq!(events[1].event.details["ended"], "the client left");
        }

        async fn events(&self) -> Vec<AuditEvent> {
            self.log.flush().await.unwrap();
            let query = AuditQuery {
                order: Order::OldestFirst,
                ..AuditQuery::default()
            };
            self.log.query(query).await.unwrap().events
        }
    }

    type Fed = Result<Frame<Bytes>, io::Error>;

    /// A body whose frames the test sends.
    type FedBody = StreamBody<Pin<Box<dyn futures_util::Stream<Item = Fed> + Send>>>;

    fn fed() -> (tokio::sync::mpsc::Sender<Fed>, FedBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::unfold(
            rx,
            |mut rx: tokio::sync::mpsc::Receiver<Fed>| async move {
                rx.recv().await.map(|item| (item, rx))
            },
        );
        (tx, StreamBody::new(Box::pin(stream)))
    }

    /// Takes the queue's last room.
    fn fill(log: &AuditLog) {
        let room = log.try_room().expect("room");
        log.append_in(room, NewEvent::system("filler", Target::default()))
            .unwrap();
        assert!(log.try_room().is_none());
    }

    /// With the audit queue full, the last byte of an answer waits for room (a stalled log
    /// slows the client down); once there is room, it goes out and the event is recorded.
    #[tokio::test]
    async fn the_last_frame_waits_for_room_for_the_event() {
        let f = fixture(1);
        fill(&f.log);
        let (mut body, _) = f.body(Full::new(Bytes::from_static(b"hello")));
        let next = body.frame().now_or_never();
        assert!(next.is_none(), "the frame went out with the queue full");
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(5));
        let flushed = {
            let log = f.log.clone();
            tokio::spawn(async move { log.flush().await })
        };
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("room came with the flush")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        flushed.await.unwrap().unwrap();
        let events = f.events().await;
        assert_eq!(events.len(), 2, "{events:?}");
        let kube = events[1].event.kube.as_ref().unwrap();
        assert_eq!(kube.bytes, 5);
        assert!(events[1].event.details.get("ended").is_none());
    }

    /// A last frame held for room that never goes out (the client left) is not counted.
    #[tokio::test]
    async fn a_held_frame_the_client_never_got_is_not_counted() {
        let f = fixture(1);
        fill(&f.log);
        let (mut body, _) = f.body(Full::new(Bytes::from_static(b"hello")));
        assert!(body.frame().now_or_never().is_none(), "held for room");
        drop(body);
        f.left_with(0).await;
    }

    /// A body dropped before its end (the client left) records what was sent; with the
    /// queue full, the append is left to a task.
    #[tokio::test]
    async fn a_body_left_early_is_recorded_with_what_was_sent() {
        let f = fixture(1);
        let (tx, inner) = fed();
        let (mut body, _) = f.body(inner);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .await
            .unwrap();
        tx.send(Ok(Frame::trailers(Default::default())))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"de"))))
            .await
            .unwrap();
        for want in ["abc", "de"] {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(
                frame.into_data().unwrap(),
                want,
                "trailers are not passed on"
            );
        }
        fill(&f.log);
        drop(body);
        f.left_with(5).await;
        drop(tx);
    }

    /// Revocation breaks the stream off with an error, and the event says why.
    #[tokio::test]
    async fn revocation_ends_the_body_and_is_recorded() {
        let f = fixture(8);
        let (tx, inner) = fed();
        let (mut body, token) = f.body(inner);
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        body.frame().await.unwrap().unwrap();
        let waiting = tokio::spawn(async move {
            let error = body.frame().await.unwrap().unwrap_err();
            (error.to_string(), body.frame().await.is_none())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(f.streams.close_where(uuid::Uuid::nil(), |_| false), 1);
        assert!(token.is_cancelled());
        let (error, then_none) = waiting.await.unwrap();
        assert_eq!(error, "access ended");
        assert!(then_none);
        let events = f.events().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].event.kube.as_ref().unwrap().bytes, 1);
        assert_eq!(events[0].event.details["ended"], "access ended");
        drop(tx);
    }
}
