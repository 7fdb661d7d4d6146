//! The plain-HTTP side of an HTTPS balancer: every request on the redirect listener gets a
//! 301 to the same host, path and query over HTTPS, except under one path prefix (where an
//! ACME http-01 challenge is answered), which is proxied as usual.

/// Where and how plain HTTP is redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The redirect listener's port: requests that arrived on it are the plain ones.
    pub plain_port: u16,
    /// The HTTPS port named in `Location` (left out when 443).
    pub https_port: u16,
    /// Path prefix proxied instead of redirected (empty: none).
    pub except: String,
}

impl Redirect {
    /// Whether a request for `path` that arrived on local port `port` is redirected.
    pub fn applies(&self, port: Option<u16>, path: &str) -> bool {
        port == Some(self.plain_port) && !self.exempt(path)
    }

    /// Under the exception, and not stepping out of it (`..` or an encoded dot): such a path
    /// is redirected like any other, never served over plain HTTP.
    fn exempt(&self, path: &str) -> bool {
        !self.except.is_empty()
            && path.starts_with(&self.except)
            && !path.split('/').any(|seg| seg == "..")
            && !path.to_ascii_lowercase().contains("%2e")
    }

    /// The `Location` for a request with this `Host` header and path-and-query; `None` when
    /// the host is missing or not a plain host name, IPv4 or bracketed IPv6 address (with an
    /// optional port), which gets a 400 rather than a redirect somewhere odd.
    pub fn location(&self, host: Option<&str>, path_and_query: &str) -> Option<String> {
        let host = host?.trim();
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => {
                let end = v6.find(']')?;
                let addr = &v6[..end];
                if addr.is_empty()
                    || !addr
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
                {
                    return None;
                }
                (&host[..end + 2], &v6[end + 1..])
            }
            None => {
                let name = &host[..host.find(':').unwrap_or(host.len())];
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
                if !valid {
                    return None;
                }
                (name, &host[name.len()..])
            }
        };
        // Whatever follows the name is a port, or the host is not one.
        let port_ok = port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !port_ok {
            return None;
        }
        let path = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        Some(match self.https_port {
            443 => format!("https://{name}{path}"),
            port => format!("https://{name}:{port}{path}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(https_port: u16) -> Redirect {
        Redirect {
            plain_port: 80,
            https_port,
            except: "/.well-known/acme-challenge/".into(),
        }
    }

    #[test]
    fn locations_keep_host_path_and_query() {
        for (port, host, pq, want) in [
            (
                443,
                Some("example.com"),
                "/a/b?c=1&d",
                Some("https://example.com/a/b?c=1&d"),
            ),
            (
                443,
                Some("example.com:80"),
                "/",
                Some("https://example.com/"),
            ),
            (
                8443,
                Some("Example.com:8080"),
                "/x",
                Some("https://Example.com:8443/x"),
            ),
            (443, Some("[::1]:80"), "/x", Some("https://[::1]/x")),
            (443, Some("10.0.0.1"), "*", Some("https://10.0.0.1/")),
            (443, None, "/", None),
            (443, Some(""), "/", None),
            (443, Some("evil.com/@x"), "/", None),
            (443, Some("a b"), "/", None),
            (443, Some("[::1"), "/", None),
            (443, Some("]"), "/", None),
            (443, Some("[]"), "/", None),
            (443, Some("exa[mple]"), "/", None),
            (443, Some("[::1]x"), "/", None),
            (443, Some("example.com:"), "/", None),
            (443, Some("example.com:8x"), "/", None),
        ] {
            assert_eq!(r(port).location(host, pq).as_deref(), want, "{host:?} {pq}");
        }
    }

    #[test]
    fn only_the_plain_listener_outside_the_exception_redirects() {
        let r = r(443);
        assert!(r.applies(Some(80), "/chat"));
        assert!(!r.applies(Some(80), "/.well-known/acme-challenge/token"));
        assert!(r.applies(Some(80), "/.well-known/other"));
        assert!(r.applies(Some(80), "/.well-known/acme-challenge/../../index.html"));
        assert!(r.applies(Some(80), "/.well-known/acme-challenge/%2E%2e/index.html"));
        assert!(!r.applies(Some(443), "/chat"));
        assert!(!r.applies(None, "/chat"));
        let all = Redirect {
            except: String::new(),
            ..r
        };
        assert!(all.applies(Some(80), "/.well-known/acme-challenge/token"));
    }
}
