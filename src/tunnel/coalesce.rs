//! Write coalescing for HTTP/2 connections: both ends of the tunnel and the agent's
//! connection to the API server. HTTP/2 flushes after every turn of its connection task, and
//! on a busy connection each answer wakes that task on its own, so without help every
//! response (or request) costs one TLS record and one `writev`. [`Coalesce`]
//! holds what was written until the connection task has let every other ready task run
//! once: the frames those tasks produce in the meantime go out in the same write. On an idle
//! tunnel the wait is one trip through the runtime's queue.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Past this many held bytes, writes go out without waiting for a flush.
const HOLD_LIMIT: usize = 256 * 1024;

pub struct Coalesce<T> {
    inner: T,
    /// Whether writes are held at all (see [`Coalesce::passthrough`]).
    holds: bool,
    held: Vec<u8>,
    /// How much of `held` was written already.
    sent: usize,
    /// Whether the task yielded once since the first held byte.
    yielded: bool,
    /// Whether it yields through the runtime's deferred wake (see [`Coalesce::poll_flush`]).
    defers: bool,
}

/// Whether the current runtime has more than one worker.
fn several_workers() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| h.metrics().num_workers() > 1)
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            holds: true,
            held: Vec::with_capacity(16 * 1024),
            sent: 0,
            yielded: false,
            defers: several_workers(),
        }
    }

    /// Writes go straight through: for a connection that carries one exchange at a time,
    /// whose writes nothing would join.
    pub fn passthrough(inner: T) -> Self {
        Self {
            inner,
            holds: false,
            held: Vec::new(),
            sent: 0,
            yielded: false,
            defers: false,
        }
    }

    /// Whether writes are held (made by [`Coalesce::new`]).
    pub fn holds(&self) -> bool {
        self.holds
    }
}

impl<T: hyper::rt::Write + Unpin> Coalesce<T> {
    /// Writes everything held to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        if self.held.capacity() > HOLD_LIMIT {
            self.held.shrink_to(16 * 1024);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room before holding `incoming` more bytes.
    fn poll_room(&mut self, cx: &mut Context<'_>, incoming: usize) -> Poll<io::Result<()>> {
        if self.held.len() + incoming > HOLD_LIMIT && !self.held.is_empty() {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.holds {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        ready!(self.poll_room(cx, buf.len()))?;
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.holds {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        let total = bufs.iter().map(|b| b.len()).sum();
        ready!(self.poll_room(cx, total))?;
        for b in bufs {
            self.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        self.holds || self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held.len() > self.sent && !self.yielded {
            // Every task that is ready now runs (and may write) before this one flushes.
            // On one worker, a task that wakes itself goes to the back of the run queue;
            // with more, that wake would also wake an idle worker to steal it, so the task
            // asks for tokio's deferred wake instead, which comes after the runtime has
            // run its ready tasks and polled its I/O (one more `epoll_wait`).
            self.yielded = true;
            if self.defers {
                let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            } else {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        ready!(self.poll_drain(cx))?;
        self.yielded = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Write as _;
    use std::sync::{Arc, Mutex};

    /// Records each write it is given.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl hyper::rt::Write for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            // At most 5 bytes at a time: partial writes must be resumed.
            let n = buf.len().min(5);
            self.0.lock().unwrap().push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn writes_wait_for_the_second_flush_and_go_out_together_and_in_order() {
        let rec = Recorder::default();
        let mut io = Coalesce::new(rec.clone());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut io = Pin::new(&mut io);
        assert!(matches!(
            io.as_mut().poll_write(&mut cx, b"hello "),
            Poll::Ready(Ok(6))
        ));
        assert!(
            io.as_mut().poll_flush(&mut cx).is_pending(),
            "first flush yields"
        );
        assert!(rec.0.lock().unwrap().is_empty(), "nothing written yet");
        let parts = [io::IoSlice::new(b"tun"), io::IoSlice::new(b"nel")];
        assert!(matches!(
            io.as_mut().poll_write_vectored(&mut cx, &parts),
            Poll::Ready(Ok(6))
        ));
        assert!(matches!(
            io.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let written: Vec<u8> = rec.0.lock().unwrap().concat();
        assert_eq!(written, b"hello tunnel");
        // Flushing with nothing held does not yield.
        assert!(matches!(
            io.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        // Shutdown writes what is held.
        let _ = io.as_mut().poll_write(&mut cx, b"bye");
        assert!(matches!(
            io.as_mut().poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(rec.0.lock().unwrap().concat(), b"hello tunnelbye");
    }

    #[test]
    fn a_large_backlog_is_written_without_waiting_for_a_flush() {
        let rec = Recorder::default();
        let mut io = Coalesce::new(rec.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut io = Pin::new(&mut io);
        let chunk = vec![7u8; HOLD_LIMIT / 2 + 1];
        let _ = io.as_mut().poll_write(&mut cx, &chunk);
        assert!(rec.0.lock().unwrap().is_empty());
        let _ = io.as_mut().poll_write(&mut cx, &chunk);
        let written: usize = rec.0.lock().unwrap().iter().map(|w| w.len()).sum();
        assert_eq!(
            written,
            chunk.len(),
            "the first chunk went out to make room"
        );
    }
}
