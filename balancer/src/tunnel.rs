//! A WebSocket after its 101: the client's and the worker's connections copied into each other
//! with nothing of HTTP left between them (pingora hands them over as a
//! [`pingora::proxy::Tunnel`], `vendor/README.md` change 9).
//!
//! An idle tunnel holds no buffer: each direction reads into the stack and writes straight on;
//! only bytes a slow receiver has not taken yet are kept, on the heap, until it takes them. The
//! worker → client stream is followed frame by frame so that, when the balancer released the
//! worker's side (a drain), the client gets a close frame (1001) between two frames rather than
//! a bare TCP close, even when the client was sending at that moment. A receiver that takes
//! nothing for the send timeout ends the tunnel (each direction has its own deadline: a client
//! that writes but never reads is not kept alive by its own writes); so does a worker on
//! another host that stays silent past its limit.
//!
//! It ends when either side's stream ends (its end passed on to the other side), on an error,
//! or on those timeouts: what pingora did with an upgraded connection.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::release::ReleaseSignal;
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
    /// A receiver took no bytes for the send timeout.
    Stalled,
    /// The worker (another host of the cluster) sent nothing for its silence limit.
    Silent,
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
    /// Armed while the receiver holds back bytes; pushed back whenever it takes some.
    stall: Option<Pin<Box<Sleep>>>,
}

impl Half {
    /// Bytes wait for the receiver (in `pending`, in its stream's write buffer, or its end).
    fn held(&self) -> bool {
        !self.pending.is_empty() || self.flush || self.eof
    }

    /// Whether the receiver has held bytes back for `timeout` without taking any (`took`:
    /// it took some in this poll).
    fn stalled(&mut self, cx: &mut Context<'_>, took: bool, timeout: Duration) -> bool {
        if !self.held() {
            self.stall = None;
            return false;
        }
        let deadline = Instant::now() + timeout;
        match self.stall.as_mut() {
            None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(s) if took => s.as_mut().reset(deadline),
            Some(_) => {}
        }
        self.stall
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

/// Which side of a direction failed.
enum Fault {
    /// Reading from the sender.
    Read,
    /// Writing to the receiver.
    Write,
}

/// What happened during one poll of a direction.
#[derive(Default)]
struct Moved {
    /// The receiver took bytes.
    took: bool,
    /// Bytes came from the sender.
    read: bool,
}

/// The worker → client direction's watch: its frames, and whether the worker was released.
struct Watch<'a> {
    frames: &'a mut FrameTracker,
    release: &'a ReleaseSignal,
}

/// Moves one direction as far as it can without waiting. Ready(Ok) once the sender's end was
/// passed on. A `watch` follows every chunk's frames; once the worker is released, no frame
/// after the current one is read: its side ends at that frame's boundary (or when the worker
/// is gone), and a close frame (1001) follows, unless the worker sent its own or ended
/// mid-frame.
fn poll_half<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    half: &mut Half,
    moved: &mut Moved,
    mut watch: Option<Watch<'_>>,
) -> Poll<Result<(), Fault>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let write = |_| Fault::Write;
    loop {
        while !half.pending.is_empty() {
            let n = ready!(Pin::new(&mut *to).poll_write(cx, &half.pending)).map_err(write)?;
            if n == 0 {
                return Poll::Ready(Err(Fault::Write));
            }
            half.pending.advance(n);
            half.written += n as u64;
            half.flush = true;
            moved.took = true;
        }
        if half.pending.capacity() > 0 {
            // Taken: an idle direction keeps no allocation.
            half.pending = BytesMut::new();
        }
        if half.flush {
            ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(write)?;
            half.flush = false;
            moved.took = true;
        }
        if half.eof {
            // The peer may already be gone: the stream ended either way.
            let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
            return Poll::Ready(Ok(()));
        }
        let released = watch.as_ref().is_some_and(|w| w.release.released());
        // Released: the worker's side ends at the next frame boundary; no byte of a frame
        // after it is read.
        let limit = match watch.as_ref().map(|w| w.frames.left_in_frame()) {
            Some(None) if released => 0,
            Some(Some(left)) if released => {
                usize::try_from(left).map_or(READ_CHUNK, |l| l.min(READ_CHUNK))
            }
            _ => READ_CHUNK,
        };
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack[..limit]);
        let ended = limit == 0
            || match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => buf.filled().is_empty(),
                // A released worker may be gone already: what it sent is still passed on.
                Poll::Ready(Err(_)) if released => true,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Fault::Read)),
                Poll::Pending => return Poll::Pending,
            };
        let data = buf.filled();
        if ended {
            half.eof = true;
            if let Some(w) = &watch
                && released
                && w.frames.at_boundary()
                && !w.frames.close_seen()
            {
                half.pending.extend_from_slice(&GOING_AWAY_CLOSE);
            }
            continue;
        }
        moved.read = true;
        if let Some(w) = watch.as_mut() {
            w.frames.feed(data);
        }
        let mut off = 0;
        while off < data.len() {
            match Pin::new(&mut *to).poll_write(cx, &data[off..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(Fault::Write)),
                Poll::Ready(Ok(n)) => {
                    off += n;
                    half.written += n as u64;
                    moved.took = true;
                }
                Poll::Pending => {
                    half.pending.extend_from_slice(&data[off..]);
                    break;
                }
            }
        }
        half.flush = true;
    }
}

/// The longest the worker may stay silent (set for another host of the cluster, whose
/// freeze the client could not see).
struct Silence {
    limit: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Silence {
    /// Whether the worker has been silent for the limit (`read`: it sent bytes in this poll).
    fn over(&mut self, cx: &mut Context<'_>, read: bool) -> bool {
        if read {
            self.last = Instant::now();
        }
        // The timer is pushed back only when it fires, not on every read.
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last + self.limit;
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
        false
    }
}

/// The copy of one WebSocket, as a future.
pub(crate) struct Pump<C, W> {
    client: C,
    worker: W,
    /// Client → worker.
    up: Half,
    /// The worker stopped taking bytes (released, or gone): the client's are no longer read,
    /// while the worker → client direction runs to its end.
    up_closed: bool,
    /// Worker → client.
    down: Half,
    frames: FrameTracker,
    /// Set when the balancer releases the worker (a drain): its side ends, announced by a
    /// close frame.
    release: Arc<ReleaseSignal>,
    send_timeout: Duration,
    silence: Option<Box<Silence>>,
}

impl<C, W> Pump<C, W> {
    /// A tunnel between `client` and `worker`, starting with what each side sent that was
    /// already read (`client_preread` goes to the worker, `worker_preread` to the client).
    /// Both streams are flushed first (the 101 and the request may still be buffered). A
    /// worker silent for `worker_silence` ends it.
    pub(crate) fn new(
        client: C,
        client_preread: BytesMut,
        worker: W,
        worker_preread: BytesMut,
        release: Arc<ReleaseSignal>,
        send_timeout: Duration,
        worker_silence: Option<Duration>,
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
            up_closed: false,
            down: Half {
                pending: worker_preread,
                flush: true,
                ..Half::default()
            },
            frames,
            release,
            send_timeout,
            silence: worker_silence.map(|limit| {
                Box::new(Silence {
                    limit,
                    last: Instant::now(),
                    timer: Box::pin(tokio::time::sleep(limit)),
                })
            }),
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
        this.release.register(cx.waker());
        if !this.up_closed {
            let mut moved = Moved::default();
            match poll_half(
                cx,
                &mut this.client,
                &mut this.worker,
                &mut this.up,
                &mut moved,
                None,
            ) {
                Poll::Ready(Ok(())) => return this.outcome(End::Client),
                Poll::Ready(Err(Fault::Read)) => return this.outcome(End::Failed),
                Poll::Ready(Err(Fault::Write)) => {
                    // The worker's side is ending (a release shuts it, a worker may reset it):
                    // what it already sent, and a close frame, still go to the client.
                    this.up_closed = true;
                    this.up = Half::default();
                }
                Poll::Pending => {
                    if this.up.stalled(cx, moved.took, this.send_timeout) {
                        return this.outcome(End::Stalled);
                    }
                }
            }
        }
        let mut moved = Moved::default();
        let down = poll_half(
            cx,
            &mut this.worker,
            &mut this.client,
            &mut this.down,
            &mut moved,
            Some(Watch {
                frames: &mut this.frames,
                release: &this.release,
            }),
        );
        match down {
            Poll::Ready(Ok(())) => return this.outcome(End::Worker),
            Poll::Ready(Err(_)) => return this.outcome(End::Failed),
            Poll::Pending => {}
        }
        if this.down.stalled(cx, moved.took, this.send_timeout) {
            return this.outcome(End::Stalled);
        }
        if let Some(silence) = this.silence.as_mut()
            && silence.over(cx, moved.read)
        {
            return this.outcome(End::Silent);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Close;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    /// A pump between two in-memory pipes; returns the far ends (client side, worker side).
    fn pump(
        client_preread: &[u8],
        worker_preread: &[u8],
        release: Arc<ReleaseSignal>,
        capacity: usize,
    ) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Outcome>) {
        pump_silent_after(client_preread, worker_preread, release, capacity, None)
    }

    /// [`pump`] with a worker silence limit.
    fn pump_silent_after(
        client_preread: &[u8],
        worker_preread: &[u8],
        release: Arc<ReleaseSignal>,
        capacity: usize,
        silence: Option<Duration>,
    ) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Outcome>) {
        let (client_far, client_near) = duplex(capacity);
        let (worker_far, worker_near) = duplex(capacity);
        let p = Pump::new(
            client_near,
            BytesMut::from(client_preread),
            worker_near,
            BytesMut::from(worker_preread),
            release,
            Duration::from_secs(5),
            silence,
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
        let release = Arc::new(ReleaseSignal::default());
        let (mut client, mut worker, task) = pump(b"", b"", release.clone(), 64 * 1024);
        worker.write_all(b"\x81\x03abc").await.expect("write");
        assert_eq!(read_n(&mut client, 5).await, b"\x81\x03abc");
        release.close();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, GOING_AWAY_CLOSE);
        assert_eq!(task.await.expect("join").end, End::Worker);
        // The worker sees its connection end.
        let mut rest = Vec::new();
        worker.read_to_end(&mut rest).await.expect("eof");
    }

    #[tokio::test]
    async fn a_release_mid_frame_waits_for_its_end_and_reads_nothing_after_it() {
        let release = Arc::new(ReleaseSignal::default());
        let (mut client, mut worker, task) = pump(b"", b"", release.clone(), 64 * 1024);
        worker.write_all(b"\x81\x05ab").await.expect("write");
        assert_eq!(read_n(&mut client, 4).await, b"\x81\x05ab");
        release.close();
        // The rest of the frame, and a whole next frame that must not follow.
        worker.write_all(b"cde\x81\x04next").await.expect("write");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, [&b"cde"[..], &GOING_AWAY_CLOSE[..]].concat());
        assert_eq!(task.await.expect("join").end, End::Worker);
    }

    #[tokio::test]
    async fn a_release_reaches_a_slow_client_after_what_it_was_already_sent() {
        let release = Arc::new(ReleaseSignal::default());
        // A 1 KiB pipe to the client: most of the 1,004-byte frame waits in the tunnel.
        let (mut client, mut worker, task) = pump(b"", b"", release.clone(), 1024);
        let mut a = vec![0x82, 126, 0x03, 0xE8];
        a.extend_from_slice(&[7u8; 1000]);
        worker.write_all(&a).await.expect("write");
        tokio::task::yield_now().await;
        release.close();
        let late = tokio::spawn(async move {
            // Sent after the release: never reaches the client.
            let _ = worker.write_all(b"\x81\x04late").await;
            worker
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, [&a[..], &GOING_AWAY_CLOSE[..]].concat());
        assert_eq!(task.await.expect("join").end, End::Worker);
        drop(late.await.expect("join"));
    }

    #[tokio::test]
    async fn no_close_frame_when_the_worker_ends_mid_frame_closed_itself_or_was_not_released() {
        for (bytes, released) in [
            (&b"\x81\x05ab"[..], true),       // gone inside a frame
            (&b"\x88\x02\x03\xe8"[..], true), // the worker closed itself
            (&b"\x81\x01a"[..], false),       // the worker just ended
        ] {
            let release = Arc::new(ReleaseSignal::default());
            let (mut client, mut worker, task) = pump(b"", b"", release.clone(), 64 * 1024);
            worker.write_all(bytes).await.expect("write");
            assert_eq!(read_n(&mut client, bytes.len()).await, bytes);
            if released {
                release.close();
            }
            worker.shutdown().await.expect("shutdown");
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            assert!(got.is_empty(), "{bytes:?} released={released}: {got:?}");
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

    #[tokio::test(start_paused = true)]
    async fn a_client_that_writes_but_never_reads_is_dropped_after_the_send_timeout() {
        let (mut client, mut worker, task) = pump(b"", b"", Arc::default(), 1024);
        // The worker sends what the client never takes, and takes what the client sends.
        worker.write_all(&[0u8; 2048]).await.expect("write");
        let sink = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while worker.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            while client.write_all(b"chatter").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let out = task.await.expect("join");
        assert_eq!(out.end, End::Stalled);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "{took:?}"
        );
        writer.await.expect("join");
        sink.await.expect("join");
    }

    #[tokio::test]
    async fn a_released_worker_still_closes_politely_a_client_that_is_sending() {
        let release = Arc::new(ReleaseSignal::default());
        let (mut client, mut worker, task) = pump(b"", b"", release.clone(), 64 * 1024);
        worker.write_all(b"\x81\x02hi").await.expect("write");
        assert_eq!(read_n(&mut client, 4).await, b"\x81\x02hi");
        // Released while the worker's socket is gone both ways and the client keeps sending.
        drop(worker);
        release.close();
        let _ = client.write_all(b"more from the client").await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, GOING_AWAY_CLOSE);
        assert_eq!(task.await.expect("join").end, End::Worker);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_ends_the_tunnel_after_its_limit_and_each_byte_pushes_it_back() {
        let limit = Duration::from_secs(60);
        let (mut client, mut worker, task) =
            pump_silent_after(b"", b"", Arc::default(), 1024, Some(limit));
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(40)).await;
        worker.write_all(b"\x81\x01a").await.expect("write");
        assert_eq!(read_n(&mut client, 3).await, b"\x81\x01a");
        // The client talking does not count: only the worker's silence.
        client.write_all(b"hello?").await.expect("write");
        let out = task.await.expect("join");
        assert_eq!(out.end, End::Silent);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(100) && took < Duration::from_secs(101),
            "{took:?}"
        );
        drop(worker);
    }
}
