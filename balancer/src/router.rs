//! Several apps behind one listener: which app a request goes to, by its host and path prefix,
//! and the sticky settings of that route.
//!
//! The most specific route wins, as nginx picks a `server` then a `location`: an exact host
//! before a wildcard (`*.example.com`, one label or more) before any host, then the longest
//! path prefix. Routes are sorted once; picking one walks them in order.

use crate::policy::NewSessions;

/// How engine.io sessions of a route are kept on their worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// Engine.io path prefix, e.g. `/socket.io/`.
    pub engineio_path: String,
    /// Placement of new sessions.
    pub new_sessions: NewSessions,
    /// Affinity cookie name.
    pub cookie: String,
}

/// Which requests a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// A subdomain of this one (`*.example.com` is stored as `.example.com`).
    Suffix(String),
}

impl HostMatch {
    /// Parse a configured host: `example.com`, `*.example.com`, or empty for any.
    pub fn parse(host: &str) -> Self {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        match host.strip_prefix('*') {
            _ if host.is_empty() => HostMatch::Any,
            Some(suffix) => HostMatch::Suffix(suffix.to_string()),
            None => HostMatch::Exact(host),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// More specific first: exact, then longer suffixes, then any.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(h) => (0, usize::MAX - h.len()),
            HostMatch::Suffix(s) => (1, usize::MAX - s.len()),
            HostMatch::Any => (2, 0),
        }
    }
}

/// One route: requests for `host` under `path` go to app number `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The hosts it takes.
    pub host: HostMatch,
    /// The path prefix it takes (`/` for every path).
    pub path: String,
    /// Index of its app in the balancer's list of apps.
    pub app: usize,
    /// The app's name (its workers' ids start with `<name>:`).
    pub app_name: String,
    /// Its sticky settings.
    pub sticky: Sticky,
}

/// Every route, most specific first.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    /// Some route names a host (else the `Host` header is never read).
    by_host: bool,
}

impl Router {
    /// Order `routes` by specificity (the configuration's order breaks ties).
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| (r.host.rank(), usize::MAX - r.path.len()));
        let by_host = routes.iter().any(|r| r.host != HostMatch::Any);
        Self { routes, by_host }
    }

    /// Every request to app 0, `app_name`, with the default sticky settings (`/socket.io/`,
    /// least-conn, cookie `rtsup`).
    pub fn single(app_name: &str) -> Self {
        Self::new(vec![Route {
            host: HostMatch::Any,
            path: "/".into(),
            app: 0,
            app_name: app_name.into(),
            sticky: Sticky {
                engineio_path: "/socket.io/".into(),
                new_sessions: NewSessions::LeastConn,
                cookie: "rtsup".into(),
            },
        }])
    }

    /// The route of a request with this `Host` header (port and case ignored; asked for only
    /// when some route names a host) and path, with its index in [`Router::routes`].
    pub fn pick<'a>(
        &self,
        host: impl FnOnce() -> Option<&'a str>,
        path: &str,
    ) -> Option<(usize, &Route)> {
        let host = if self.by_host {
            host().map(host_name).unwrap_or_default()
        } else {
            String::new()
        };
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.host.matches(&host) && path.starts_with(r.path.as_str()))
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// `Host` without its port, lower case, without a final dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, path: &str, app: &str) -> Route {
        Route {
            host: HostMatch::parse(host),
            path: path.into(),
            app: 0,
            app_name: app.into(),
            sticky: Sticky {
                engineio_path: "/socket.io/".into(),
                new_sessions: NewSessions::LeastConn,
                cookie: "rtsup".into(),
            },
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let r = Router::new(vec![
            route("", "/", "web"),
            route("", "/api/", "api"),
            route("chat.example.com", "/", "chat"),
            route("*.example.com", "/", "tenant"),
            route("*.eu.example.com", "/", "eu"),
            route("chat.example.com", "/admin/", "chat-admin"),
        ]);
        for (host, path, want) in [
            (Some("chat.example.com"), "/socket.io/?EIO=4", Some("chat")),
            (Some("CHAT.example.com:443"), "/", Some("chat")),
            (
                Some("chat.example.com."),
                "/admin/users",
                Some("chat-admin"),
            ),
            (Some("shop.example.com"), "/", Some("tenant")),
            (Some("a.eu.example.com"), "/", Some("eu")),
            (Some("example.com"), "/", Some("web")),
            (Some("other.org"), "/api/v1", Some("api")),
            (Some("other.org"), "/apix", Some("web")),
            (None, "/", Some("web")),
            (Some("[::1]:8080"), "/api/", Some("api")),
        ] {
            assert_eq!(
                r.pick(|| host, path).map(|(_, r)| r.app_name.as_str()),
                want,
                "{host:?} {path}"
            );
        }
        let no_catch_all = Router::new(vec![route("chat.example.com", "/", "chat")]);
        assert!(no_catch_all.pick(|| Some("other.org"), "/").is_none());
        // Without host routes the Host header is never read.
        let any = Router::single("web");
        assert!(any.pick(|| panic!("Host read"), "/x").is_some());
    }

    #[test]
    fn hosts_parse() {
        assert_eq!(HostMatch::parse(""), HostMatch::Any);
        assert_eq!(
            HostMatch::parse("Example.COM."),
            HostMatch::Exact("example.com".into())
        );
        assert_eq!(
            HostMatch::parse("*.example.com"),
            HostMatch::Suffix(".example.com".into())
        );
        assert!(!HostMatch::parse("*.example.com").matches("example.com"));
        assert!(!HostMatch::parse("*.example.com").matches("badexample.com"));
    }
}
