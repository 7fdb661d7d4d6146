// Copyright 2026 rtsup contributors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! rtsup (vendored change 35): the wait of a kept-alive HTTP/1.x connection for its next
//! request, timed by one timer the connection keeps for its whole life.
//!
//! A timeout made for each wait puts a timer into the runtime's wheel when the wait starts
//! and takes it out when the request comes, twice per request on a busy connection. The
//! timer kept here is armed once and left alone while requests keep coming: when it fires,
//! the wait that sees it compares the clock with its own deadline and either ends (the
//! connection was idle for the whole timeout) or re-arms it for that deadline. It fires at
//! most once per timeout for a connection in use, and never closes one early.
//!
//! The wait also ends when the server's shutdown begins (as pingora's own wait for a request
//! does, `HttpProxy::handle_new_request`): an idle kept-alive connection is closed then, before
//! its client sends a request the stopping server would not answer. Bytes already there are
//! read first.

use bytes::BytesMut;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, Sleep};

use super::common::INIT_HEADER_BUF_SIZE;
use crate::protocols::Stream;
use crate::server::ShutdownWatch;

/// What ended one poll of the wait.
enum Woken {
    Read(std::io::Result<usize>),
    Shutdown,
    Timer,
}

/// Resolves once the server's shutdown has begun; never when the watch cannot tell any more
/// (its sender gone).
async fn shutdown_begun(mut shutdown: ShutdownWatch) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Where a connection's watch of the server's shutdown stands.
enum Stopping {
    /// Not waited on yet: the watch, turned into a wait on the first one.
    Watch(ShutdownWatch),
    /// Joined to the watch's waiters, for the connection's life.
    Waiting(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// The shutdown began (the wait resolved, never to be polled again).
    Begun,
}

/// The idle timer of one kept-alive connection, and its watch of the server's shutdown; both
/// made on its first wait and kept for the connection's life.
///
/// The shutdown wait is kept too: the watch's waiter list is joined once per connection,
/// not once per request (a lock, a list insertion and a removal each time, ~450 instructions
/// a request under callgrind).
pub struct KeepaliveTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    stopping: Stopping,
}

impl std::fmt::Debug for KeepaliveTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepaliveTimer")
            .field("sleep", &self.sleep)
            .field("stopped", &matches!(self.stopping, Stopping::Begun))
            .finish_non_exhaustive()
    }
}

impl KeepaliveTimer {
    /// The timer of a connection whose waits also end when `shutdown` says the server is
    /// stopping.
    pub fn new(shutdown: ShutdownWatch) -> Self {
        Self {
            sleep: None,
            stopping: Stopping::Watch(shutdown),
        }
    }

    /// Read the first bytes of the connection's next request, waiting at most `timeout` for
    /// them. `None` when the client closed the connection, a read failed, `timeout` passed
    /// with nothing read, or the server is stopping: all mean the connection ends quietly, as
    /// a kept-alive one does when its client is done.
    pub async fn read_next_request(
        &mut self,
        stream: &mut Stream,
        timeout: Duration,
    ) -> Option<BytesMut> {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                // A later deadline is left for the firing to find; an earlier one (a shorter
                // timeout than the last wait's) must be armed now.
                if sleep.deadline() > deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if let Stopping::Watch(shutdown) = &self.stopping {
            self.stopping = Stopping::Waiting(Box::pin(shutdown_begun(shutdown.clone())));
        }
        let stopping = &mut self.stopping;
        let mut buf = BytesMut::with_capacity(INIT_HEADER_BUF_SIZE);
        let mut read = std::pin::pin!(stream.read_buf(&mut buf));
        loop {
            let woken = poll_fn(|cx| {
                if let Poll::Ready(read) = read.as_mut().poll(cx) {
                    return Poll::Ready(Woken::Read(read));
                }
                let begun = match stopping {
                    Stopping::Begun => true,
                    Stopping::Waiting(wait) => wait.as_mut().poll(cx).is_ready(),
                    Stopping::Watch(_) => false,
                };
                if begun {
                    *stopping = Stopping::Begun;
                    return Poll::Ready(Woken::Shutdown);
                }
                sleep.as_mut().poll(cx).map(|()| Woken::Timer)
            })
            .await;
            match woken {
                Woken::Read(Ok(n)) if n > 0 => break,
                Woken::Read(_) | Woken::Shutdown => return None,
                // Idle for the whole timeout: the connection is done.
                Woken::Timer if Instant::now() >= deadline => return None,
                // Armed for an earlier wait's deadline: now for this one's.
                Woken::Timer => sleep.as_mut().reset(deadline),
            }
        }
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// The timer of a connection to a server that is not stopping, and whose watch outlives
    /// the test (a leaked sender).
    fn running() -> KeepaliveTimer {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        KeepaliveTimer::new(rx)
    }

    fn pair() -> (Stream, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        (Box::new(ours), theirs)
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_request_is_read_and_an_idle_connection_ends_after_the_timeout() {
        let (mut stream, mut client) = pair();
        let mut timer = running();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let start = Instant::now();
        let first = timer.read_next_request(&mut stream, TIMEOUT).await;
        assert_eq!(first.as_deref(), Some(&b"GET / HTTP/1.1\r\n"[..]));
        assert_eq!(
            Instant::now(),
            start,
            "bytes already there are read at once"
        );
        // Nothing more comes: the wait ends after exactly the timeout.
        let start = Instant::now();
        assert_eq!(timer.read_next_request(&mut stream, TIMEOUT).await, None);
        assert_eq!(Instant::now() - start, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_in_use_is_never_closed_early_by_a_timer_armed_for_an_earlier_wait() {
        let (mut stream, mut client) = pair();
        let mut timer = running();
        // Requests every 0.7 timeout for several timeouts: the timer armed by the first wait
        // fires during the second one, which must go on waiting until its own deadline.
        for i in 0..6u8 {
            let writer = async {
                tokio::time::sleep(TIMEOUT.mul_f32(0.7)).await;
                client.write_all(&[b'a' + i]).await.unwrap();
            };
            let (read, ()) = tokio::join!(timer.read_next_request(&mut stream, TIMEOUT), writer);
            assert_eq!(read.as_deref(), Some(&[b'a' + i][..]), "wait {i}");
        }
        // Then idle: closed a full timeout after the last wait began, not before.
        let start = Instant::now();
        assert_eq!(timer.read_next_request(&mut stream, TIMEOUT).await, None);
        assert_eq!(Instant::now() - start, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_than_the_armed_one_is_kept() {
        let (mut stream, _client) = pair();
        let mut timer = running();
        let (mut other, mut other_client) = pair();
        other_client.write_all(b"x").await.unwrap();
        // Armed for TIMEOUT by a wait that ended at once.
        assert!(timer.read_next_request(&mut other, TIMEOUT).await.is_some());
        let start = Instant::now();
        let short = TIMEOUT / 4;
        assert_eq!(timer.read_next_request(&mut stream, short).await, None);
        assert_eq!(Instant::now() - start, short);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_ends_the_wait_at_once() {
        let (mut stream, client) = pair();
        let mut timer = running();
        drop(client);
        let start = Instant::now();
        assert_eq!(timer.read_next_request(&mut stream, TIMEOUT).await, None);
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_when_shutdown_begins_after_reading_what_is_there() {
        let (mut stream, mut client) = pair();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut timer = KeepaliveTimer::new(rx);
        let stop = async {
            tokio::time::sleep(TIMEOUT / 4).await;
            tx.send(true).unwrap();
        };
        let start = Instant::now();
        let (read, ()) = tokio::join!(timer.read_next_request(&mut stream, TIMEOUT), stop);
        assert_eq!(read, None);
        assert_eq!(
            Instant::now() - start,
            TIMEOUT / 4,
            "closed when shutdown began"
        );
        // Once stopping: a request already there is still read, an idle wait ends at once.
        client.write_all(b"GET").await.unwrap();
        let read = timer.read_next_request(&mut stream, TIMEOUT).await;
        assert_eq!(read.as_deref(), Some(&b"GET"[..]));
        let start = Instant::now();
        assert_eq!(timer.read_next_request(&mut stream, TIMEOUT).await, None);
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_whose_sender_is_gone_does_not_end_the_wait() {
        let (mut stream, _client) = pair();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut timer = KeepaliveTimer::new(rx);
        drop(tx);
        let start = Instant::now();
        assert_eq!(timer.read_next_request(&mut stream, TIMEOUT).await, None);
        assert_eq!(Instant::now() - start, TIMEOUT, "ended by the timeout only");
    }
}
