//! Write coalescing for the tunnel's HTTP/2 connection, at both ends. HTTP/2 flushes after
//! every turn of its connection task, and on a busy connection each answer wakes that task
//! on its own, so without help every response (or request) costs one TLS record and one
//! `writev`. [`Coalesce`] holds what was written until the connection task has let every
//! other ready task run once: the frames those tasks produce in the meantime go out in the
//! same write. On an idle tunnel the wait is one trip through the runtime's queue.
//!
//! The wait only pays when other requests are on their way, and on one request at a time
//! it is pure cost: on a runtime with several workers, the yield wakes an idle worker (a
//! futex wake, and the request moves to another thread). So a connection learns from its
//! last wait: when nothing joined a yield, the next flushes go out at once, one more each
//! time a yield finds nothing again (up to [`MAX_SKIP`]), and yielding resumes in full as
//! soon as one pays off.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Past this many held bytes, writes go out without waiting for a flush.
const HOLD_LIMIT: usize = 256 * 1024;
/// Most flushes that go out without yielding after yields that nothing joined: then the
/// connection tries a yield again.
const MAX_SKIP: u8 = 31;

pub struct Coalesce<T> {
    inner: T,
    held: Vec<u8>,
    /// How much of `held` was written already.
    sent: usize,
    /// Bytes accepted so far (wrapping): a yield compares it before and after.
    accepted: usize,
    /// Set by a yielding flush: `accepted` then.
    yielded_at: Option<usize>,
    /// A flush is writing out what is held (and yields no more until it is done).
    draining: bool,
    /// Flushes still to go out without a yield.
    skip: u8,
    /// How many flushes the next yield that nothing joins makes skip.
    backoff: u8,
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
            held: Vec::with_capacity(16 * 1024),
            sent: 0,
            accepted: 0,
            yielded_at: None,
            draining: false,
            skip: 0,
            backoff: 0,
            defers: several_workers(),
        }
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

    /// Holds `bytes`.
    fn hold(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
        self.accepted = self.accepted.wrapping_add(bytes.len());
    }

    /// After a yield: whether anything joined decides whether the next flushes yield.
    fn learn(&mut self, joined: bool) {
        if joined {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2 + 1).min(MAX_SKIP);
        }
        self.skip = self.backoff;
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
        ready!(self.poll_room(cx, buf.len()))?;
        self.hold(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        ready!(self.poll_room(cx, total))?;
        for b in bufs {
            self.hold(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(at) = self.yielded_at.take() {
            let joined = self.accepted != at;
            self.learn(joined);
        } else if self.held.len() > self.sent && !self.draining {
            if self.skip > 0 {
                self.skip -= 1;
            } else {
                // Every task that is ready now runs (and may write) before this one
                // flushes. On one worker, a task that wakes itself goes to the back of the
                // run queue; with more, that wake would also wake an idle worker to steal
                // it, so the task asks for tokio's deferred wake instead, which comes after
                // the runtime has run its ready tasks and polled its I/O (one more
                // `epoll_wait`).
                self.yielded_at = Some(self.accepted);
                if self.defers {
                    let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                } else {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
        self.draining = true;
        ready!(self.poll_drain(cx))?;
        self.draining = false;
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

    /// Writes a frame and flushes it out; `join` writes another frame during the yield, as
    /// a second request would. Returns whether the flush yielded.
    fn round(io: &mut Pin<&mut Coalesce<Recorder>>, join: bool) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = io.as_mut().poll_write(&mut cx, b"frame");
        if io.as_mut().poll_flush(&mut cx).is_ready() {
            return false;
        }
        if join {
            let _ = io.as_mut().poll_write(&mut cx, b"joined");
        }
        assert!(io.as_mut().poll_flush(&mut cx).is_ready());
        true
    }

    #[test]
    fn yields_that_nothing_joins_make_the_next_flushes_go_out_at_once() {
        let rec = Recorder::default();
        let mut io = Coalesce::new(rec.clone());
        let mut io = Pin::new(&mut io);
        // One request at a time: each yield that finds nothing doubles the flushes that
        // skip the next one (1, 3, 7, 15, then at most MAX_SKIP).
        let yielded: Vec<bool> = (0..100).map(|_| round(&mut io, false)).collect();
        let at: Vec<usize> = (0..100).filter(|&i| yielded[i]).collect();
        assert_eq!(at, [0, 2, 6, 14, 30, 62, 94]);
        assert_eq!(at[6] - at[5], usize::from(MAX_SKIP) + 1);
        // Every frame went out, in order.
        let written: Vec<u8> = rec.0.lock().unwrap().concat();
        assert_eq!(written, b"frame".repeat(100));
        // Once a yield pays off (another frame joined), every flush yields again.
        let mut first = None;
        for i in 0..=usize::from(MAX_SKIP) {
            if round(&mut io, true) {
                first = Some(i);
                break;
            }
        }
        assert!(first.is_some(), "a yield is tried within MAX_SKIP flushes");
        assert!((0..10).all(|_| round(&mut io, true)));
        // And one that finds nothing backs off again.
        assert!(round(&mut io, false));
        assert!(!round(&mut io, false));
        assert!(round(&mut io, false));
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
