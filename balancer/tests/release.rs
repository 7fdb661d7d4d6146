//! Releasing WebSockets through the real pingora proxy: a raw TCP "worker" that answers the
//! upgrade with 101 and one text frame, raw TCP clients, and `ProxyHandle::release`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::router::Router;
use balancer::server::ClientLimits;
use balancer::service::{ProxyTimeouts, RoutingConfig};
use balancer::websocket::GOING_AWAY_CLOSE;
use balancer::{Backend, BackendSet, BackendState, BalancerSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The engine.io open packet as a server → client text frame.
const OPEN_FRAME: &[u8] = b"\x81\x0a0{\"sid\":1}";

/// A free port below the ephemeral range (one from there can be taken by any outgoing
/// connection between this check and the proxy's bind).
fn free_port() -> SocketAddr {
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    (start..32_000)
        .chain(20_000..start)
        .find_map(|port| {
            let l = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            l.local_addr().ok()
        })
        .expect("a free port below 32000")
}

/// A worker that upgrades every request, sends the open frame, then holds the connection
/// until EOF (or `bye` from the client, then it hangs up) and reports each end.
async fn worker(listener: TcpListener, eofs: mpsc::UnboundedSender<()>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let eofs = eofs.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                        Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() || s.write_all(OPEN_FRAME).await.is_err()
            {
                return;
            }
            // Until EOF, or until the client asks the worker to hang up.
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 || chunk[..n].windows(3).any(|w| w == b"bye") {
                    break;
                }
            }
            let _ = eofs.send(());
        });
    }
}

/// Open a WebSocket through the proxy and read the 101 and the open frame; also returns what
/// came after the open frame in the same reads.
async fn client(proxy: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    let req = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
               Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("send upgrade");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("101 in time")
            .expect("read");
        assert!(n > 0, "proxy closed before the open frame: {got:?}");
        got.extend_from_slice(&chunk[..n]);
        if let Some(at) = got.windows(OPEN_FRAME.len()).position(|w| w == OPEN_FRAME) {
            assert!(got.starts_with(b"HTTP/1.1 101"), "{got:?}");
            let rest = got.split_off(at + OPEN_FRAME.len());
            return (s, rest);
        }
    }
}

/// Everything the client reads until EOF.
async fn until_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("read");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_closes_websockets_gracefully_and_spread() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
    let addr = listener.local_addr().expect("addr");
    let (eof_tx, mut eof_rx) = mpsc::unbounded_channel();
    tokio::spawn(worker(listener, eof_tx));

    let id: Arc<str> = Arc::from("w#1");
    let (_set_tx, set_rx) = tokio::sync::watch::channel(BackendSet {
        backends: vec![Backend {
            id: id.clone(),
            key: Arc::from("w"),
            addr,
            state: BackendState::Ready,
            remote: false,
        }],
    });
    let listen = free_port();
    let proxy = balancer::server::spawn(
        BalancerSettings {
            listen,
            tls: None,
            access_log: None,
            threads: 1,
            routing: RoutingConfig {
                router: Router::single("a"),
                trusted_proxies: Vec::new(),
                unsticky: false,
                session_rate: 0,
                session_burst: 0,
                timeouts: ProxyTimeouts::default(),
                redirect: None,
                tls: false,
                cookie_secret: None,
                cluster: None,
            },
            max_sessions: 1000,
            limits: ClientLimits::default(),
            preserve_header_case: false,
        },
        vec![set_rx],
    )
    .expect("proxy");
    // pingora binds on its own thread.
    let t0 = Instant::now();
    while TcpStream::connect(listen).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "proxy never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. A worker that hangs up by itself: nothing is added, and the registry forgets it.
    let (mut own, _) = client(listen).await;
    own.write_all(b"bye").await.expect("send");
    assert_eq!(until_eof(&mut own).await, b"");
    eof_rx.recv().await.expect("worker end");
    let t0 = Instant::now();
    while proxy.upgrades.open(&id) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "registry kept an ended connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 2. Ten WebSockets released over one second: one close frame each, then EOF, spread.
    let mut conns = Vec::new();
    for _ in 0..10 {
        let (c, rest) = client(listen).await;
        assert!(rest.is_empty());
        conns.push(c);
    }
    assert_eq!(proxy.upgrades.open(&id), 10);
    let start = Instant::now();
    assert_eq!(proxy.release(&id, Duration::from_secs(1)), 10);
    let mut closed_at = Vec::new();
    let waits: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let got = until_eof(&mut c).await;
                (got, start.elapsed())
            })
        })
        .collect();
    for w in waits {
        let (got, at) = w.await.expect("join");
        assert_eq!(got, GOING_AWAY_CLOSE, "close frame then EOF");
        closed_at.push(at);
    }
    closed_at.sort();
    for (k, at) in closed_at.iter().enumerate() {
        let due = Duration::from_millis(100 * k as u64);
        assert!(
            *at + Duration::from_millis(5) >= due && *at < due + Duration::from_millis(300),
            "connection {k} closed at {at:?}, due {due:?}: {closed_at:?}"
        );
    }
    for _ in 0..10 {
        tokio::time::timeout(Duration::from_secs(2), eof_rx.recv())
            .await
            .expect("worker saw the connection end");
    }

    // pingora finished every released request (its `logging` ran).
    let t0 = Instant::now();
    while proxy.metrics.websockets.get(&id) > 0 || proxy.loads.get(&id) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "requests never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 3. A WebSocket opened after the release is closed at once.
    let (mut late, mut got) = client(listen).await;
    got.extend(until_eof(&mut late).await);
    assert_eq!(got, GOING_AWAY_CLOSE);
    assert_eq!(proxy.release(&id, Duration::from_secs(1)), 0);

    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .expect("stop");
}
