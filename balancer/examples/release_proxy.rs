//! The balancer alone in front of two workers, driven from stdin: a harness for
//! `bench/stampede.js` until the supervisor calls `release` itself.
//!
//! ```text
//! release_proxy LISTEN WORKER_A WORKER_B
//! ```
//! Starts with A (`a#1`) Ready and B (`b#1`) Starting, prints `{"listening":"LISTEN"}`, then
//! reads commands, one a line, each answered by one JSON line:
//! - `drain`: A Draining, B Ready (what a reload does before A's drain time is up);
//! - `release MS`: `drain`, then release A's WebSockets over MS milliseconds;
//! - `gone`: A Gone (what the supervisor publishes once A was stopped);
//! - `count`: A's live sessions (what the supervisor's drain gate reads) and open WebSockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use balancer::router::Router;
use balancer::server::ClientLimits;
use balancer::service::{ProxyTimeouts, RoutingConfig};
use balancer::{Backend, BackendSet, BackendState, BalancerSettings};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

fn set(a: SocketAddr, sa: BackendState, b: SocketAddr, sb: BackendState) -> BackendSet {
    let backend = |id: &str, key: &str, addr, state| Backend {
        id: Arc::from(id),
        key: Arc::from(key),
        addr,
        state,
        remote: false,
    };
    BackendSet {
        backends: vec![backend("a#1", "a", a, sa), backend("b#1", "b", b, sb)],
    }
}

fn addr(arg: Option<String>) -> Result<SocketAddr, String> {
    let arg = arg.ok_or("usage: release_proxy LISTEN WORKER_A WORKER_B")?;
    arg.parse().map_err(|e| format!("{arg}: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (listen, a, b) = (addr(args.next())?, addr(args.next())?, addr(args.next())?);
    let (tx, rx) = watch::channel(set(a, BackendState::Ready, b, BackendState::Starting));
    let settings = BalancerSettings {
        listen,
        tls: None,
        access_log: None,
        threads: 2,
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
        max_sessions: 1_000_000,
        limits: ClientLimits::default(),
        preserve_header_case: false,
    };
    let proxy = balancer::server::spawn(settings, vec![rx]).map_err(|e| e.to_string())?;
    println!("{{\"listening\":\"{listen}\"}}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("drain"), _) => {
                tx.send_replace(set(a, BackendState::Draining, b, BackendState::Ready));
                println!("{{\"drained\":\"a#1\"}}");
            }
            (Some("release"), Some(ms)) => {
                let Ok(ms) = ms.parse::<u64>() else {
                    println!("{{\"error\":\"bad window {ms}\"}}");
                    continue;
                };
                tx.send_replace(set(a, BackendState::Draining, b, BackendState::Ready));
                let t = std::time::Instant::now();
                let n = proxy.release("a#1", Duration::from_millis(ms));
                println!(
                    "{{\"released\":{n},\"window_ms\":{ms},\"call_us\":{}}}",
                    t.elapsed().as_micros()
                );
            }
            (Some("gone"), _) => {
                tx.send_replace(set(a, BackendState::Gone, b, BackendState::Ready));
                println!("{{\"gone\":\"a#1\"}}");
            }
            (Some("count"), _) => println!(
                "{{\"sessions\":{},\"websockets\":{}}}",
                proxy.loads.get("a#1"),
                proxy.metrics.websockets.get("a#1")
            ),
            _ => println!("{{\"error\":\"unknown command\"}}"),
        }
    }
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .map_err(|e| e.to_string())
}
