//! The body of a relayed response: the agent's bytes, passed through frame by frame, counted
//! for the request's audit event (which is recorded once the body has ended, so `bytes` is
//! what the client was sent, chunked and streamed answers included, and `duration` covers
//! the whole answer), and cut with an error when the user's access ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::streams::StreamGuard;
use crate::audit::{AuditLog, TryAppend};
use crate::domain::audit::{Durability, KubeRequest, NewEvent};

/// A request's audit event, waiting for the size and duration of its answer.
pub struct Record {
    pub audit: AuditLog,
    pub event: NewEvent,
    pub kube: KubeRequest,
    pub started: Instant,
}

type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Record {
    fn finish(self, bytes: u64) -> (AuditLog, NewEvent) {
        let Record {
            audit,
            mut event,
            mut kube,
            started,
        } = self;
        kube.bytes = bytes;
        kube.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        event.kube = Some(kube);
        (audit, event)
    }

    /// Appends the event, waiting for room in the audit queue.
    pub async fn append(self, bytes: u64) {
        let (audit, event) = self.finish(bytes);
        if let Err(e) = audit.append(event, Durability::Fast).await {
            tracing::error!(error = %e, "cannot record a Kubernetes response");
        }
    }

    /// Appends the event at once when the queue has room; otherwise returns the wait.
    fn try_append(self, bytes: u64) -> Option<Pending> {
        let (audit, event) = self.finish(bytes);
        match audit.try_append(event) {
            Ok(_) => None,
            Err(TryAppend::Full(event)) => Some(Box::pin(async move {
                if let Err(e) = audit.append(*event, Durability::Fast).await {
                    tracing::error!(error = %e, "cannot record a Kubernetes response");
                }
            })),
            Err(TryAppend::Failed(e)) => {
                tracing::error!(error = %e, "cannot record a Kubernetes response");
                None
            }
        }
    }
}

pub struct RelayBody {
    inner: Incoming,
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Keeps the stream registered (so revocation reaches it) until the body is gone.
    _guard: StreamGuard,
    bytes: u64,
    record: Option<Record>,
    /// The event's append, when the queue was full as the body ended: the end of the body
    /// waits for it, as a stalled audit disk must slow clients down, not grow memory.
    appending: Option<Pending>,
    ended: bool,
}

impl RelayBody {
    pub fn new(inner: Incoming, guard: StreamGuard, record: Record) -> Self {
        Self {
            inner,
            revoked: Box::pin(guard.token.clone().cancelled_owned()),
            _guard: guard,
            bytes: 0,
            record: Some(record),
            appending: None,
            ended: false,
        }
    }

    /// Records the event now or, when the audit queue is full, leaves the wait to the caller.
    fn record(&mut self) {
        if let Some(record) = self.record.take() {
            self.appending = record.try_append(self.bytes);
        }
    }
}

impl hyper::body::Body for RelayBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(appending) = this.appending.as_mut() {
            ready!(appending.as_mut().poll(cx));
            this.appending = None;
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if this.revoked.as_mut().poll(cx).is_ready() {
            this.ended = true;
            this.record();
            // The client sees the stream break; the event is queued or follows in Drop.
            return Poll::Ready(Some(Err(io::Error::other("access revoked"))));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.ended = true;
                this.record();
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            None => {
                this.ended = true;
                this.record();
                if let Some(appending) = this.appending.as_mut() {
                    ready!(appending.as_mut().poll(cx));
                    this.appending = None;
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only once the event is recorded, so the server polls to the end.
        self.ended && self.record.is_none() && self.appending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for RelayBody {
    /// A client that goes away before the end (or a server that stops reading the body, as
    /// for HEAD) still leaves the event, with the bytes it was sent.
    fn drop(&mut self) {
        self.record();
        if let Some(appending) = self.appending.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(appending);
                }
                Err(_) => tracing::error!("cannot record a Kubernetes response: no runtime"),
            }
        }
    }
}
