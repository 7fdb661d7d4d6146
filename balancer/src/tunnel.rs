//! A WebSocket after its 101: the client's and the worker's connections copied into each other
//! with nothing of HTTP left between them (pingora hands them over as a
//! [`pingora::proxy::Tunnel`], `vendor/README.md` change 9).
//!
//! An idle tunnel holds no buffer: each direction reads into the stack and writes straight on;
//! only bytes a slow receiver has not taken yet are kept, on the heap, until it takes them. The
//! worker → client stream is followed frame by frame so that, when the balancer released the
//! worker's side (a drain), the client gets a close frame (1001) between two frames rather than
//! a bare TCP close. A receiver that takes nothing for the send timeout ends the tunnel.
//!
//! It ends when either side's stream ends (its end passed on to the other side), on an error,
//! or on that timeout: what pingora did with an upgraded connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::websocket::{FrameTracker, GOING_AWAY_CLOSE};

/// Bytes read from one side at a time (on the stack of the poll, never kept).
const READ_CHUNK: usize = 16 * 1024;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client ended its stream (passed on to the worker).
    Client,
    /// The worker ended its stream, or the balancer released it (passed on to the client).
    Worker,
    /// A read or write failed on either side.
    Failed,
    /// A side took no bytes for the send timeout.
    Stalled,
}

/// What a tunnel carried, for the access log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) end: End,
    /// Bytes written to the client (the worker's stream and a closing frame).
    pub(crate) to_client: u64,
}

/// One direction: what was read and not yet written, and where its stream stands.
#[derive(Debug, Default)]
struct Half {
    /// Bytes read and not yet taken by the receiver (empty, unallocated, while idle).
    pending: BytesMut,
    /// Written bytes may sit in the receiver stream's write buffer.
    flush: bool,
    /// The sender's stream ended; once `pending` is written, the receiver's is shut.
    eof: bool,
    /// Bytes written to the receiver.
    written: u64,
}

/// The worker → client direction's watch: its frames, and whether the worker was released.
struct Watch<'a> {
    frames: &'a mut FrameTracker,
    released: &'a (dyn Fn() -> bool + Send + Sync),
}

impl Half {
    /// Bytes wait for the receiver (in `pending` or in its stream's write buffer).
    fn held(&self) -> bool {
        !self.pending.is_empty() || self.flush
    }
}

/// Moves one direction as far as it can without waiting. Ready(Ok) once the sender's end was
/// passed on; `progress` is set when the receiver took bytes. A `watch` follows every chunk's
/// frames and, when the worker's side ended because it was released, writes a close frame
/// (1001) after the last frame, unless the worker sent its own.
fn poll_half<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    half: &mut Half,
    progress: &mut bool,
    mut watch: Option<Watch<'_>>,
) -> Poll<io::Result<()>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        while !half.pending.is_empty() {
            let n = ready!(Pin::new(&mut *to).poll_write(cx, &half.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            half.pending.advance(n);
            half.written += n as u64;
            half.flush = true;
            *progress = true;
        }
        if half.pending.capacity() > 0 {
            // Taken: an idle direction keeps no allocation.
            half.pending = BytesMut::new();
        }
        if half.flush {
            ready!(Pin::new(&mut *to).poll_flush(cx))?;
            half.flush = false;
            *progress = true;
        }
        if half.eof {
            // The peer may already be gone: the stream ended either way.
            let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
            return Poll::Ready(Ok(()));
        }
        let mut stack = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut stack);
        ready!(Pin::new(&mut *from).poll_read(cx, &mut buf))?;
        let data = buf.filled();
        if data.is_empty() {
            half.eof = true;
            if let Some(w) = &watch
                && (w.released)()
                && w.frames.at_boundary()
                && !w.frames.close_seen()
            {
                half.pending.extend_from_slice(&GOING_AWAY_CLOSE);
            }
            continue;
        }
        if let Some(w) = watch.as_mut() {
            w.frames.feed(data);
        }
        let mut off = 0;
        while off < data.len() {
            match Pin::new(&mut *to).poll_write(cx, &data[off..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    off += n;
                    half.written += n as u64;
                    *progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    half.pending.extend_from_slice(&data[off..]);
                    break;
                }
            }
        }
        half.flush = true;
    }
}

/// The copy of one WebSocket, as a future.
pub(crate) struct Pump<C, W> {
    client: C,
    worker: W,
    /// Client → worker.
    up: Half,
    /// Worker → client.
    down: Half,
    frames: FrameTracker,
    /// Whether the balancer released the worker's side (then its end gets a close frame).
    released: Box<dyn Fn() -> bool + Send + Sync>,
    send_timeout: Duration,
    /// Armed while a receiver holds back bytes; pushed back whenever it takes some.
    stall: Option<Pin<Box<Sleep>>>,
}

impl<C, W> Pump<C, W> {
    /// A tunnel between `client` and `worker`, starting with what each side sent that was
    /// already read (`client_preread` goes to the worker, `worker_preread` to the client).
    /// Both streams are flushed first (the 101 and the request may still be buffered).
    pub(crate) fn new(
        client: C,
        client_preread: BytesMut,
        worker: W,
        worker_preread: BytesMut,
        released: Box<dyn Fn() -> bool + Send + Sync>,
        send_timeout: Duration,
    ) -> Self {
        let mut frames = FrameTracker::default();
        frames.feed(&worker_preread);
        Self {
            client,
            worker,
            up: Half {
                pending: client_preread,
                flush: true,
                ..Half::default()
            },
            down: Half {
                pending: worker_preread,
                flush: true,
                ..Half::default()
            },
            frames,
            released,
            send_timeout,
            stall: None,
        }
    }

    fn outcome(&self, end: End) -> Poll<Outcome> {
        Poll::Ready(Outcome {
            end,
            to_client: self.down.written,
        })
    }
}

impl<C, W> Future for Pump<C, W>
where
    C: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        let mut progress = false;
        match poll_half(
            cx,
            &mut this.client,
            &mut this.worker,
            &mut this.up,
            &mut progress,
            None,
        ) {
            Poll::Ready(Ok(())) => return this.outcome(End::Client),
            Poll::Ready(Err(_)) => return this.outcome(End::Failed),
            Poll::Pending => {}
        }
        let down = poll_half(
            cx,
            &mut this.worker,
            &mut this.client,
            &mut this.down,
            &mut progress,
            Some(Watch {
                frames: &mut this.frames,
                released: &*this.released,
            }),
        );
        match down {
            Poll::Ready(Ok(())) => return this.outcome(End::Worker),
            Poll::Ready(Err(_)) => return this.outcome(End::Failed),
            Poll::Pending => {}
        }
        if !this.up.held() && !this.down.held() {
            this.stall = None;
            return Poll::Pending;
        }
        let deadline = Instant::now() + this.send_timeout;
        match this.stall.as_mut() {
            None => this.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(s) if progress => s.as_mut().reset(deadline),
            Some(_) => {}
        }
        if let Some(s) = this.stall.as_mut()
            && s.as_mut().poll(cx).is_ready()
        {
            return this.outcome(End::Stalled);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    /// A pump between two in-memory pipes; returns the far ends (client side, worker side).
    fn pump(
        client_preread: &[u8],
        worker_preread: &[u8],
        released: Arc<AtomicBool>,
        capacity: usize,
    ) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Outcome>) {
        let (client_far, client_near) = duplex(capacity);
        let (worker_far, worker_near) = duplex(capacity);
        let p = Pump::new(
            client_near,
            BytesMut::from(client_preread),
            worker_near,
            BytesMut::from(worker_preread),
            Box::new(move || released.load(Ordering::Relaxed)),
            Duration::from_secs(5),
        );
        (client_far, worker_far, tokio::spawn(p))
    }

    async fn read_n(s: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        s.read_exact(&mut v).await.expect("read");
        v
    }

    #[tokio::test]
    async fn prereads_go_first_then_both_directions_flow() {
        let (mut client, mut worker, task) =
            pump(b"early", b"\x81\x01a", Arc::default(), 64 * 1024);
        assert_eq!(read_n(&mut worker, 5).await, b"early");
        assert_eq!(read_n(&mut client, 3).await, b"\x81\x01a");
        client.write_all(b"ping").await.expect("write");
        assert_eq!(read_n(&mut worker, 4).await, b"ping");
        worker.write_all(b"\x81\x02hi").await.expect("write");
        assert_eq!(read_n(&mut client, 4).await, b"\x81\x02hi");
        drop(client);
        let out = task.await.expect("join");
        assert_eq!(out.end, End::Client);
        assert_eq!(out.to_client, 7);
        // The client's end reached the worker.
        let mut rest = Vec::new();
        worker.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_released_worker_ends_with_a_close_frame_between_frames() {
        let released = Arc::new(AtomicBool::new(false));
        let (mut client, mut worker, task) = pump(b"", b"", released.clone(), 64 * 1024);
        worker.write_all(b"\x81\x03abc").await.expect("write");
        released.store(true, Ordering::Relaxed);
        worker.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, [&b"\x81\x03abc"[..], &GOING_AWAY_CLOSE[..]].concat());
        assert_eq!(task.await.expect("join").end, End::Worker);
    }

    #[tokio::test]
    async fn no_close_frame_mid_frame_after_the_workers_own_close_or_unreleased() {
        for (bytes, released) in [
            (&b"\x81\x05ab"[..], true),       // cut inside a frame
            (&b"\x88\x02\x03\xe8"[..], true), // the worker closed itself
            (&b"\x81\x01a"[..], false),       // the worker just ended
        ] {
            let flag = Arc::new(AtomicBool::new(released));
            let (mut client, mut worker, task) = pump(b"", b"", flag, 64 * 1024);
            worker.write_all(bytes).await.expect("write");
            worker.shutdown().await.expect("shutdown");
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, bytes, "{bytes:?} released={released}");
            assert_eq!(task.await.expect("join").end, End::Worker);
        }
    }

    #[tokio::test]
    async fn a_slow_receiver_gets_everything_in_order() {
        // A 1 KiB pipe: most of 200 KiB waits in `pending` while the client reads slowly.
        let (mut client, mut worker, task) = pump(b"", b"", Arc::default(), 1024);
        let data: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            worker.write_all(&sent).await.expect("write");
            worker.shutdown().await.expect("shutdown");
            worker
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, data);
        drop(writer.await.expect("join"));
        assert_eq!(task.await.expect("join").to_client, data.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_that_takes_nothing_ends_the_tunnel_after_the_send_timeout() {
        let (client, mut worker, task) = pump(b"", b"", Arc::default(), 1024);
        worker.write_all(&[0u8; 2048]).await.expect("write");
        let start = Instant::now();
        let out = task.await.expect("join");
        assert_eq!(out.end, End::Stalled);
        assert!(start.elapsed() >= Duration::from_secs(5));
        drop(client);
    }
}
