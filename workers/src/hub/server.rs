//! The hub server, hosted by the `rtsup` daemon: fans published messages out to subscribers.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::proto::{Frame, read_frame, write_frame};

/// Frames queued for one slow subscriber before it is disconnected (it reconnects and
/// resubscribes; a stuck worker must not grow the hub's memory without bound).
const QUEUE: usize = 8192;

#[derive(Default)]
struct State {
    next_id: u64,
    subs: HashMap<String, HashSet<u64>>,
    conns: HashMap<u64, mpsc::Sender<Frame>>,
}

/// Pause after a failed accept before trying again.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Shared hub state.
#[derive(Default, Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
}

impl Hub {
    /// Serve connections accepted on `listener` until the task is aborted. A failed accept
    /// (out of file descriptors) is reported once per streak and retried after a pause: the
    /// hub keeps serving, and never spins.
    pub async fn serve(self, listener: UnixListener) {
        let mut failing = false;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("hub accepting again");
                    }
                    tokio::spawn(self.clone().connection(stream));
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        warn!(error = %e, "hub accept failed; retrying");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    async fn connection(self, stream: UnixStream) {
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
        let id = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            st.next_id += 1;
            let id = st.next_id;
            st.conns.insert(id, tx.clone());
            id
        };
        let writer = tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                if write_frame(&mut write, &f).await.is_err() {
                    return;
                }
            }
        });
        loop {
            match read_frame(&mut read).await {
                Ok(Some(frame)) => self.handle(id, &tx, frame),
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "hub connection dropped");
                    break;
                }
            }
        }
        if let Ok(mut st) = self.state.lock() {
            st.conns.remove(&id);
            st.subs.retain(|_, s| {
                s.remove(&id);
                !s.is_empty()
            });
        }
        writer.abort();
    }

    fn handle(&self, id: u64, tx: &mpsc::Sender<Frame>, frame: Frame) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match frame {
            Frame::Subscribe(c) => {
                st.subs.entry(c).or_default().insert(id);
            }
            Frame::Unsubscribe(c) => {
                if let Some(s) = st.subs.get_mut(&c) {
                    s.remove(&id);
                    if s.is_empty() {
                        st.subs.remove(&c);
                    }
                }
            }
            Frame::Publish(c, payload) => {
                let Some(ids) = st.subs.get(&c) else { return };
                let mut dead = Vec::new();
                for sub in ids {
                    if let Some(q) = st.conns.get(sub)
                        && q.try_send(Frame::Message(c.clone(), Bytes::clone(&payload)))
                            .is_err()
                    {
                        dead.push(*sub);
                    }
                }
                for d in dead {
                    warn!(conn = d, "hub subscriber too slow; dropping it");
                    st.conns.remove(&d);
                }
            }
            Frame::NumSub(req, c) => {
                let n = st
                    .subs
                    .get(&c)
                    .map_or(0, |s| s.len().min(u16::MAX as usize) as u16);
                let _ = tx.try_send(Frame::NumSubReply(req, n));
            }
            Frame::Message(..) | Frame::NumSubReply(..) => {}
        }
    }
}

/// Bind the hub's Unix socket (mode 0600), replacing a stale socket file.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}
