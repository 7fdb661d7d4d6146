//! What a proxied request and response keep of their header: field names go on as the proxy
//! spells them (pingora's dozen standard names titled, `Host`, `Content-Length`,
//! `Set-Cookie`..., every other name lowercase) unless `[balancer] preserve_header_case = true`
//! keeps the spelling that came in (nginx). The fields rtsup adds are spelled the same in
//! both modes.

use serde_json::Value;

use crate::harness;

/// The field names of `raw` (Node's `rawHeaders`: name, value, name, value...).
fn names(raw: &Value) -> Vec<String> {
    raw.as_array()
        .expect("rawHeaders")
        .iter()
        .step_by(2)
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// Whether the answer's head has a field spelled exactly `name`.
fn spelled(head: &str, name: &str) -> bool {
    head.lines()
        .any(|l| l.split_once(':').is_some_and(|(n, _)| n == name))
}

#[test]
fn field_names_go_on_as_the_proxy_spells_them_unless_their_case_is_preserved() {
    let request = "GET /raw-headers HTTP/1.1\r\nhOsT: x\r\nX-Mixed-Case: 1\r\n\r\n";
    for (extra, preserved) in [("", false), ("preserve_header_case = true", true)] {
        let (_r, lb) = harness::fixture_cluster(extra, "", None);
        // Twice on one connection: the second request is read by a kept-alive session.
        let answer = harness::roundtrip(
            lb,
            &format!(
                "{request}{}",
                request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            ),
        );
        let answers: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(answers.len(), 2, "{extra:?}: {answer}");
        for (i, answer) in answers.into_iter().enumerate() {
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
            assert!(head.starts_with("200"), "{extra:?} #{i}: {answer}");
            let raw: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{extra:?} #{i}: {e}: {body}"));
            let names = names(&raw);
            let want: &[&str] = if preserved {
                &["hOsT", "X-Mixed-Case"]
            } else {
                &["Host", "x-mixed-case"]
            };
            for name in want {
                assert!(
                    names.iter().any(|n| n == name),
                    "{extra:?} #{i}: {name} not in {names:?}"
                );
            }
            assert!(names.iter().any(|n| n == "x-forwarded-for"), "{names:?}");
            let reply = if preserved {
                "X-Fixture-Case"
            } else {
                "x-fixture-case"
            };
            assert!(
                spelled(head, reply),
                "{extra:?} #{i}: {reply} not in {head}"
            );
            assert!(spelled(head, "Content-Length"), "{extra:?} #{i}: {head}");
        }
        // The affinity cookie of a handshake, added by rtsup: `Set-Cookie` either way.
        let open = harness::roundtrip(
            lb,
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(spelled(&open, "Set-Cookie"), "{extra:?}: {open}");
    }
}

/// The values of the field `name` in `raw` (Node's `rawHeaders`), in order.
fn values(raw: &Value, name: &str) -> Vec<String> {
    raw.as_array()
        .expect("rawHeaders")
        .chunks(2)
        .filter(|f| f[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .filter_map(|f| f.get(1).and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[test]
fn each_request_on_a_kept_alive_connection_gets_its_own_forwarded_for() {
    // The value of a request that comes without the field is kept for the connection's next
    // ones: one that comes with it in between must still get its own, and the next without
    // it the peer alone again.
    let (_r, lb) = harness::fixture_cluster("", "", None);
    let plain = "GET /raw-headers HTTP/1.1\r\nHost: x\r\n\r\n";
    let relayed = "GET /raw-headers HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
    let last = "GET /raw-headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = harness::roundtrip(lb, &format!("{plain}{relayed}{plain}{relayed}{last}"));
    let got: Vec<Vec<String>> = answer
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|a| {
            let (head, body) = a.split_once("\r\n\r\n").unwrap_or((a, ""));
            assert!(head.starts_with("200"), "{answer}");
            let raw: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
            values(&raw, "x-forwarded-for")
        })
        .collect();
    let peer = || vec!["127.0.0.1".to_string()];
    let relayed = || vec!["203.0.113.7, 127.0.0.1".to_string()];
    assert_eq!(
        got,
        [peer(), relayed(), peer(), relayed(), peer()],
        "{answer}"
    );
}
