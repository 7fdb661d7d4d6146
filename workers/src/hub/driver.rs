//! The worker side of the hub: a socketioxide-redis `Driver` over the hub's Unix socket.
//!
//! One connection per worker, kept by a background task that reconnects (every 200 ms) when the
//! hub goes away and re-sends every subscription, so broadcasts resume on their own after an
//! `rtsup` restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::proto::{Frame, read_frame, write_frame};

/// Delay between reconnection attempts to the hub.
const RECONNECT: Duration = Duration::from_millis(200);
/// Longest wait for a `num_serv` answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the hub driver.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Not connected to the hub right now.
    #[error("not connected to the rtsup hub")]
    Disconnected,
    /// The hub did not answer in time.
    #[error("the rtsup hub did not answer")]
    Timeout,
}

#[derive(Default)]
struct Shared {
    handlers: HashMap<String, mpsc::Sender<ChanItem>>,
    pending: HashMap<u32, oneshot::Sender<u16>>,
}

/// A socketioxide-redis driver talking to the rtsup hub.
#[derive(Clone)]
pub struct HubDriver {
    out: mpsc::UnboundedSender<Frame>,
    shared: Arc<Mutex<Shared>>,
    next_req: Arc<AtomicU32>,
}

impl HubDriver {
    /// Connect to the hub at `path` (and keep reconnecting in the background).
    pub async fn connect(path: PathBuf) -> std::io::Result<Self> {
        let first = UnixStream::connect(&path).await?;
        let (out, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(run(path, first, rx, shared.clone()));
        Ok(Self {
            out,
            shared,
            next_req: Arc::new(AtomicU32::new(1)),
        })
    }
}

/// The connection task: writes queued frames, dispatches incoming ones, reconnects.
async fn run(
    path: PathBuf,
    mut stream: UnixStream,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    shared: Arc<Mutex<Shared>>,
) {
    loop {
        let (mut read, mut write) = stream.into_split();
        let reader_shared = shared.clone();
        let mut reader = tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut read).await {
                let Ok(mut sh) = reader_shared.lock() else {
                    return;
                };
                match frame {
                    Frame::Message(chan, payload) => {
                        if let Some(tx) = sh.handlers.get(&chan)
                            && tx.try_send((chan, payload.to_vec())).is_err()
                        {
                            warn!("hub driver dropped a message (handler queue full)");
                        }
                    }
                    Frame::NumSubReply(id, n) => {
                        if let Some(tx) = sh.pending.remove(&id) {
                            let _ = tx.send(n);
                        }
                    }
                    _ => {}
                }
            }
        });
        loop {
            tokio::select! {
                _ = &mut reader => break,
                frame = rx.recv() => match frame {
                    Some(f) => if write_frame(&mut write, &f).await.is_err() { break },
                    None => { reader.abort(); return; }
                },
            }
        }
        reader.abort();
        warn!(hub = %path.display(), "lost the rtsup hub; reconnecting");
        stream = loop {
            tokio::time::sleep(RECONNECT).await;
            if rx.is_closed() {
                return;
            }
            if let Ok(s) = UnixStream::connect(&path).await {
                break s;
            }
        };
        // Restore every subscription on the new connection before anything else is sent.
        let chans: Vec<String> = shared
            .lock()
            .map(|s| s.handlers.keys().cloned().collect())
            .unwrap_or_default();
        let mut restored = true;
        for c in chans {
            if write_frame(&mut stream, &Frame::Subscribe(c))
                .await
                .is_err()
            {
                restored = false;
                break;
            }
        }
        if restored {
            info!(hub = %path.display(), "reconnected to the rtsup hub; subscriptions restored");
        }
    }
}

impl Driver for HubDriver {
    type Error = HubError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), HubError> {
        self.out
            .send(Frame::Publish(chan, Bytes::from(val)))
            .map_err(|_| HubError::Disconnected)
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, HubError> {
        let (tx, rx) = mpsc::channel(size.max(1));
        if let Ok(mut sh) = self.shared.lock() {
            sh.handlers.insert(chan.clone(), tx);
        }
        self.out
            .send(Frame::Subscribe(chan))
            .map_err(|_| HubError::Disconnected)?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), HubError> {
        if let Ok(mut sh) = self.shared.lock() {
            sh.handlers.remove(&chan);
        }
        self.out
            .send(Frame::Unsubscribe(chan))
            .map_err(|_| HubError::Disconnected)
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, HubError> {
        let id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut sh) = self.shared.lock() {
            sh.pending.insert(id, tx);
        }
        self.out
            .send(Frame::NumSub(id, chan.to_string()))
            .map_err(|_| HubError::Disconnected)?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
        if let Ok(mut sh) = self.shared.lock() {
            sh.pending.remove(&id);
        }
        match answer {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(_)) => Err(HubError::Disconnected),
            Err(_) => Err(HubError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::server::{Hub, bind};
    use futures_util::StreamExt;

    #[tokio::test]
    async fn publish_reaches_every_subscriber_and_numsub_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.sock");
        tokio::spawn(Hub::default().serve(bind(&path).expect("bind")));
        let a = HubDriver::connect(path.clone()).await.expect("a");
        let b = HubDriver::connect(path.clone()).await.expect("b");
        let mut sa = a.subscribe("room".into(), 16).await.expect("sub a");
        let mut sb = b.subscribe("room".into(), 16).await.expect("sub b");
        let n = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let n = a.num_serv("room").await.expect("numsub");
                if n == 2 {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("both subscribed");
        assert_eq!(n, 2);
        a.publish("room".into(), b"hello".to_vec())
            .await
            .expect("publish");
        for s in [&mut sa, &mut sb] {
            let (chan, data) = tokio::time::timeout(Duration::from_secs(2), s.next())
                .await
                .expect("in time")
                .expect("item");
            assert_eq!((chan.as_str(), data.as_slice()), ("room", &b"hello"[..]));
        }
        b.unsubscribe("room".into()).await.expect("unsub");
        assert_eq!(a.num_serv("nobody").await.expect("numsub"), 0);
    }
}
