//! Several apps behind one listener: routes by host and path prefix, each with its own sticky
//! settings; `rtsup check` refuses a route no request could reach.

use serde_json::Value;

use crate::harness::{Rtsup, fixture, ports, roundtrip, rtsup_bin, wait_until};

/// One request (`Connection: close`) with this `Host`; the whole answer.
fn get(port: u16, host: &str, target: &str) -> String {
    roundtrip(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// The `tag` a fixture worker answered with, `None` for any other answer.
fn tag(answer: &str) -> Option<String> {
    let body = answer.split_once("\r\n\r\n")?.1;
    let v: Value = serde_json::from_str(body).ok()?;
    v["tag"].as_str().map(str::to_string)
}

fn fixture_app(name: &str, port: u16) -> String {
    format!(
        "[[app]]\nname = {name:?}\ncommand = \"node\"\nargs = [{:?}]\ninstances = 1\nport = {port}\nenv = {{ FIXTURE_TAG = {name:?} }}\n\n",
        fixture().display().to_string()
    )
}

#[test]
fn hosts_and_paths_pick_the_app_and_each_route_keeps_its_sticky_settings() {
    let base = ports::block(12).base;
    let lb = base + 11;
    let r = Rtsup::start(&format!(
        "[[app]]\nname = \"chat\"\ncommand = {:?}\nargs = [\"worker\"]\ninstances = 2\nport = {base}\nready = \"http:/health\"\n\n\
         {}{}\
         [balancer]\nlisten = \"127.0.0.1:{lb}\"\nthreads = 2\n\n\
         [[balancer.route]]\nhost = \"chat.test\"\napp = \"chat\"\ncookie = \"chat_affinity\"\n\n\
         [[balancer.route]]\npath = \"/api/\"\napp = \"api\"\n\n\
         [[balancer.route]]\napp = \"web\"\n",
        rtsup_bin(),
        fixture_app("api", base + 5),
        fixture_app("web", base + 8),
    ));
    r.wait_all_ready();
    // The balancer follows each app's workers on its own: wait until every app is routed.
    for (host, target) in [
        ("other.test", "/"),
        ("other.test", "/api/"),
        ("chat.test", "/health"),
    ] {
        wait_until(&format!("{host}{target} served"), || {
            let answer = get(lb, host, target);
            if answer.starts_with("HTTP/1.1 200") {
                Ok(())
            } else {
                Err(answer)
            }
        });
    }
    for (host, target, want) in [
        ("other.test", "/", Some("web")),
        ("other.test", "/api/users?x=1", Some("api")),
        ("OTHER.test:8080", "/apix", Some("web")),
        // A host route takes every path of its host, /api/ included (nginx: server, then
        // location); the reference worker answers no fixture tag.
        ("chat.test", "/api/users", None),
        (
            "other.test",
            "/socket.io/?EIO=4&transport=polling",
            Some("web"),
        ),
    ] {
        let answer = get(lb, host, target);
        assert_eq!(
            tag(&answer),
            want.map(str::to_string),
            "{host}{target}: {answer}"
        );
    }
    // Engine.io on the chat route: its own cookie name, and the session stays on its worker.
    let open = get(lb, "chat.test", "/socket.io/?EIO=4&transport=polling");
    assert!(open.starts_with("HTTP/1.1 200"), "{open}");
    assert!(
        crate::harness::field(&open, "set-cookie").is_some_and(|c| c.starts_with("chat_affinity=")),
        "{open}"
    );
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no sid: {open}"));
    for i in 0..20 {
        // The socket.io CONNECT first, then events the worker ignores.
        let body = if i == 0 { "40" } else { "42[\"noop\"]" };
        let post = roundtrip(
            lb,
            &format!(
                "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: chat.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(post.starts_with("HTTP/1.1 200"), "{post}");
    }
    // The chat session's sid means nothing on another app's route (engine.io there lives
    // under the route's prefix, /api/socket.io/): unknown, and the chat session lives on.
    let elsewhere = get(
        lb,
        "other.test",
        &format!("/api/socket.io/?EIO=4&transport=polling&sid={sid}"),
    );
    assert!(
        elsewhere.starts_with("HTTP/1.1 400") && elsewhere.contains("Session ID unknown"),
        "{elsewhere}"
    );
    let post = roundtrip(
        lb,
        &format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: chat.test\r\nContent-Length: 10\r\nConnection: close\r\n\r\n42[\"noop\"]"
        ),
    );
    assert!(post.starts_with("HTTP/1.1 200"), "{post}");
}

#[test]
fn without_a_catch_all_other_hosts_get_404_and_the_proxy_serves_on() {
    let base = ports::block(6).base;
    let lb = base + 5;
    let r = Rtsup::start(&format!(
        "{}[balancer]\nlisten = \"127.0.0.1:{lb}\"\n[[balancer.route]]\nhost = \"*.example.test\"\napp = \"web\"\n",
        fixture_app("web", base),
    ));
    r.wait_all_ready();
    wait_until("the web app routed", || {
        tag(&get(lb, "a.example.test", "/")).ok_or("not yet".to_string())
    });
    let answer = get(lb, "nobody.test", "/");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(tag(&get(lb, "a.example.test", "/")).as_deref(), Some("web"));
    assert!(get(lb, "example.test", "/").starts_with("HTTP/1.1 404"));
}

#[test]
fn check_reports_unreachable_and_bad_routes_with_their_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("rtsup.toml");
    std::fs::write(
        &conf,
        "[[app]]\nname = \"a\"\ncommand = \"node\"\nport = 5001\n\
         [[app]]\nname = \"b\"\ncommand = \"node\"\nport = 5101\n\
         [balancer]\nlisten = \"127.0.0.1:5200\"\napp = \"a\"\n\
         [[balancer.route]]\nhost = \"Chat.Example.com\"\npath = \"/\"\napp = \"a\"\n\
         [[balancer.route]]\nhost = \"chat.example.com\"\napp = \"b\"\n\
         [[balancer.route]]\nhost = \"bad host\"\npath = \"api\"\napp = \"nope\"\nnew_sessions = \"sticky\"\n\
         [[balancer.route]]\npath = \"/chat/\"\napp = \"a\"\nengineio_path = \"/socket.io/\"\n",
    )
    .expect("config");
    let (ok, text) = crate::harness::check_config(&conf);
    assert!(!ok, "{text}");
    let f = conf.display();
    for want in [
        format!("{f}:11:7: balancer.app: not with [[balancer.route]]"),
        format!(
            "{f}:16:1: balancer.route[1]: unreachable: balancer.route[0] takes the same host and path"
        ),
        format!("{f}:20:8: balancer.route[2].host: \"bad host\" is not a host name"),
        format!("{f}:21:8: balancer.route[2].path: must start with '/'"),
        format!("{f}:22:7: balancer.route[2].app: no [[app]] is named \"nope\""),
        format!("{f}:23:16: balancer.route[2].new_sessions: must be"),
        format!(
            "{f}:27:17: balancer.route[3].engineio_path: \"/socket.io/\" is outside the route's path \"/chat/\""
        ),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}
