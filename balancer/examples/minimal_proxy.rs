//! The ceiling rtsup's proxy is measured against (`bench/compare.py`): a pingora proxy that
//! does nothing but pick a backend round-robin in `upstream_peer`, on the same pingora and
//! the same runtime layout as rtsup (SERVICES services of one current-thread runtime each,
//! accepting on one listening socket, the same allocator and no read buffer in front of
//! client sockets, HTTP/1.x headers read without their case map as rtsup reads them by
//! default, the authority checked once), so the difference is what rtsup's own request
//! handling costs.
//!
//! `cargo run --release -p rtsup-balancer --example minimal_proxy -- LISTEN SERVICES BACKEND...`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::{ProxyHttp, Session, http_proxy_service};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Minimal {
    backends: Vec<SocketAddr>,
    turn: AtomicUsize,
}

impl ProxyHttp for Minimal {
    type CTX = ();

    fn new_ctx(&self) {}

    /// No filter at all: the authority checked on reading goes upstream as it is (vendored
    /// change 27, as rtsup).
    fn filters_change_authority(&self) -> bool {
        false
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        Ok(Box::new(HttpPeer::new(
            self.backends[i],
            false,
            String::new(),
        )))
    }
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: minimal_proxy LISTEN SERVICES BACKEND...";
    let listen = args.next().ok_or(usage)?;
    let services: usize = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("SERVICES: {e}"))?;
    let backends = args
        .map(|a| a.parse::<SocketAddr>().map_err(|e| format!("{a}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if backends.is_empty() || services == 0 {
        return Err(usage.into());
    }
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    // As rtsup: reads' waits not timed (vendored change 28).
    pingora::protocols::l4::stream::time_read_waits_by_default(false);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    for _ in 0..services {
        let mut svc = http_proxy_service(
            &server.configuration,
            Minimal {
                backends: backends.clone(),
                turn: AtomicUsize::new(0),
            },
        );
        // HTTP/1.x headers read as rtsup reads them by default: no case map (vendored
        // change 26, `[balancer] preserve_header_case = false`).
        if let Some(proxy) = svc.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h1_discard_header_case = true;
            proxy.server_options = Some(options);
        }
        svc.endpoints().add_listener(
            ListenerConfig::tcp(listen.clone()).l4_buffer(L4BufferSettings::default().read(0)),
        );
        server.add_service(svc);
    }
    server.run_forever();
}
