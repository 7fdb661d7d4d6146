//! Who listens on a TCP port, read from `/proc`: the socket's inode in `/proc/net/tcp{,6}`,
//! then the processes holding a descriptor of it.
//!
//! Used to say *who* holds a busy port ("port 5003 in use by pid 812 (python3)") and to count a
//! worker ready only when the listening socket its probe reached belongs to its own process
//! group, not to a stranger that was on the port first. Linux only; where `/proc` does not
//! tell, the answers are empty and callers fall back to not knowing.

use std::collections::HashSet;
use std::fs;

/// State code of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// The processes (pid, process group, name) holding a socket that listens on TCP `port`.
pub fn listeners(port: u16) -> Vec<(u32, u32, String)> {
    let inodes: HashSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|target| target.to_str().is_some_and(|t| inodes.contains(t)))
        });
        if holds {
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let name = fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            out.push((pid, process_group(&stat).unwrap_or(0), name));
        }
    }
    out
}

/// The first process listening on TCP `port`, with its name.
pub fn port_owner(port: u16) -> Option<(u32, String)> {
    listeners(port)
        .into_iter()
        .next()
        .map(|(pid, _, name)| (pid, name))
}

/// Whether the listener on `port` belongs to process group `pgid` (a worker's tree).
/// `None` when `/proc` shows no listener at all (cannot tell); `Some(Err(holder))` names the
/// stranger.
pub(crate) fn held_by_group(port: u16, pgid: u32) -> Option<Result<(), String>> {
    let holders = listeners(port);
    if holders.is_empty() {
        return None;
    }
    if holders.iter().any(|(_, group, _)| *group == pgid) {
        return Some(Ok(()));
    }
    let (pid, _, name) = &holders[0];
    Some(Err(format!(
        "port {port} is held by pid {pid} ({name}), not by this worker"
    )))
}

/// Inodes of the sockets listening on `port` in one `/proc/net/tcp`-format table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let p = u16::from_str_radix(hex_port, 16).ok()?;
            (p == port && *fields.get(3)? == LISTEN && *fields.get(9)? != "0")
                .then(|| fields[9].to_string())
        })
        .collect()
}

/// The process group of `pid`, from `/proc`.
pub(crate) fn process_group_of(pid: u32) -> Option<u32> {
    process_group(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process group in a `/proc/<pid>/stat` line (field 5, after the command in parens).
fn process_group(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_inodes_reads_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:138B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
   1: 0100007F:138B 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0\n\
   2: 00000000:138C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0\n";
        assert_eq!(listening_inodes(table, 5003), vec!["4242".to_string()]);
        assert_eq!(listening_inodes(table, 5004), vec!["4444".to_string()]);
        assert!(listening_inodes(table, 5005).is_empty());
    }

    #[test]
    fn process_group_of_a_stat_line() {
        assert_eq!(
            process_group("812 (node server.js) S 1 812 812 0 -1"),
            Some(812)
        );
        assert_eq!(process_group("garbage"), None);
    }

    #[test]
    fn a_port_this_process_listens_on_is_ours_and_named() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let me = std::process::id();
        let stat = fs::read_to_string("/proc/self/stat").expect("stat");
        let group = process_group(&stat).expect("pgrp");
        assert_eq!(held_by_group(port, group), Some(Ok(())));
        let other = held_by_group(port, group + 1).expect("a listener");
        assert!(
            other.is_err_and(|e| e.contains(&format!("pid {me}"))),
            "a stranger's port"
        );
        assert_eq!(port_owner(port).map(|(pid, _)| pid), Some(me));
    }
}
