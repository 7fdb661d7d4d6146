//! Running out of file descriptors: every accept loop backs off and keeps serving, and the
//! daemon neither spins nor loses its control socket.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Rtsup, cpu_ticks, fixture_app, ports, wait_until};

#[test]
fn out_of_file_descriptors_the_daemon_keeps_answering_and_does_not_spin() {
    let block = ports::block(4);
    let (base, admin) = (block.base, block.base + 3);
    drop(block);
    let r = Rtsup::start_full(
        &format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            fixture_app("web", 1, base, "")
        ),
        &[],
        Some("-n 96"),
    );
    r.wait_all_ready();
    // Hold more connections than the daemon has descriptors: the admin accept loop runs out.
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", admin)) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // An operator asks for the status while the daemon is out of descriptors.
    let _ = r.cli(&["status"]);
    let t0 = cpu_ticks(r.pid());
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(r.pid()) - t0;
    let ticks = (w0.elapsed().as_secs_f64() * 100.0) as u64; // USER_HZ = 100
    assert!(
        used * 4 < ticks,
        "the daemon spins while out of descriptors: {used} of {ticks} ticks"
    );
    drop(held);
    // Everything answers again: the control socket and the admin server.
    wait_until("the control socket answers again", || {
        r.try_status().map(|_| ())
    });
    wait_until("the admin server answers again", || {
        crate::harness::http_get(admin, "/status").map(|_| ())
    });
    assert!(
        r.daemon_log().matches("admin accept failed").count() <= 2,
        "one warning per streak, not one per attempt:\n{}",
        r.daemon_log()
    );
}

/// The soft and hard limits on open files of a running process.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f.get(3).copied().unwrap_or_default().to_string(),
        f.get(4).copied().unwrap_or_default().to_string(),
    )
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let base = ports::block(2).base;
    let r = Rtsup::start_full(&fixture_app("web", 1, base, ""), &[], Some("-Sn 256"));
    let (soft, hard) = nofile(r.pid());
    assert_eq!(soft, hard, "soft {soft}, hard {hard}");
    assert_ne!(soft, "256");
}

#[test]
fn the_admin_server_holds_a_bounded_number_of_connections() {
    let block = ports::block(3);
    let (base, admin) = (block.base, block.base + 2);
    drop(block);
    let r = Rtsup::start(&format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        fixture_app("web", 1, base, "")
    ));
    r.wait_all_ready();
    // 100 requests that never finish their header: the admin server keeps 32 of them and
    // closes the rest at once, so they cannot take the daemon's descriptors.
    let mut held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", admin)).ok())
        .collect();
    for c in &mut held {
        let _ = std::io::Write::write_all(c, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    }
    let closed = wait_until("the surplus closed", || {
        let closed = held
            .iter()
            .filter(|c| {
                let _ = c.set_read_timeout(Some(Duration::from_millis(20)));
                match std::io::Read::read(&mut &**c, &mut [0u8; 64]) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .count();
        if closed >= 60 {
            Ok(closed)
        } else {
            Err(format!("{closed} closed"))
        }
    });
    assert!(closed <= 68, "it keeps 32: {closed} of 100 closed");
    assert!(r.try_status().is_ok(), "the control socket answers");
    drop(held);
    wait_until("the admin server answers again", || {
        crate::harness::http_get(admin, "/status").map(|_| ())
    });
}
