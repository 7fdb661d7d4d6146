//! What a proxied request and response keep of their header: field names go on as the proxy
//! spells them (standard ones titled, others lowercase, as HAProxy and Envoy send them)
//! unless `[balancer] preserve_header_case = true` keeps the spelling that came in (nginx).

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

#[test]
fn field_names_go_on_as_the_proxy_spells_them_unless_their_case_is_preserved() {
    for (extra, preserved) in [("", false), ("preserve_header_case = true", true)] {
        let (_r, lb) = harness::fixture_cluster(extra, "", None);
        let answer = harness::roundtrip(
            lb,
            "GET /raw-headers HTTP/1.1\r\nhOsT: x\r\nX-Mixed-Case: 1\r\nConnection: close\r\n\r\n",
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{extra:?}: {answer}");
        let raw: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{extra:?}: {e}: {body}"));
        let names = names(&raw);
        let want: &[&str] = if preserved {
            &["hOsT", "X-Mixed-Case"]
        } else {
            &["Host", "x-mixed-case"]
        };
        for name in want {
            assert!(
                names.iter().any(|n| n == name),
                "{extra:?}: {name} not in {names:?}"
            );
        }
        // What rtsup adds is spelled its own way in both modes.
        assert!(names.iter().any(|n| n == "x-forwarded-for"), "{names:?}");
        let field = if preserved {
            "\r\nX-Fixture-Case: Mixed\r\n"
        } else {
            "\r\nx-fixture-case: Mixed\r\n"
        };
        assert!(
            format!("\r\n{head}\r\n").contains(field),
            "{extra:?}: {field:?} not in {head}"
        );
        assert!(head.contains("\r\nContent-Length: "), "{extra:?}: {head}");
    }
}
