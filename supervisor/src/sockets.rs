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

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// Its pid.
    pub(crate) pid: u32,
    /// Its process group.
    pub(crate) group: u32,
    /// Its parent's pid.
    pub(crate) parent: u32,
    /// Its name (`comm`).
    pub(crate) name: String,
}

/// The processes holding a socket that listens on TCP `port`.
pub(crate) fn listeners(port: u16) -> Vec<Holder> {
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
            out.push(Holder {
                pid,
                group: process_group(&stat).unwrap_or(0),
                parent: parent(&stat).unwrap_or(0),
                name,
            });
        }
    }
    out
}

/// The first process listening on TCP `port`, with its name.
pub fn port_owner(port: u16) -> Option<(u32, String)> {
    original(&listeners(port)).map(|h| (h.pid, h.name.clone()))
}

/// The holder that did not inherit the socket from another holder: a child shares its
/// parent's descriptors (a pre-forking server's workers; any child between `fork` and `exec`,
/// named like the thread that forked it), and the parent is the one to name. The first
/// holder when every one has a holding parent (cannot tell).
fn original(holders: &[Holder]) -> Option<&Holder> {
    holders
        .iter()
        .find(|h| !holders.iter().any(|p| p.pid == h.parent))
        .or(holders.first())
}

/// Whether the listener on `port` belongs to process group `pgid` (a worker's tree).
/// `None` when `/proc` shows no listener at all (cannot tell); `Some(Err(holder))` names the
/// stranger.
pub(crate) fn held_by_group(port: u16, pgid: u32) -> Option<Result<(), String>> {
    let holders = listeners(port);
    if holders.is_empty() {
        return None;
    }
    if holders.iter().any(|h| h.group == pgid) {
        return Some(Ok(()));
    }
    let h = original(&holders)?;
    Some(Err(format!(
        "port {port} is held by pid {} ({}), not by this worker",
        h.pid, h.name
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
    stat_field(stat, 2)
}

/// The parent's pid in a `/proc/<pid>/stat` line (field 4).
fn parent(stat: &str) -> Option<u32> {
    stat_field(stat, 1)
}

/// Field `n` after the command (in parens, which may hold spaces) of a `/proc/<pid>/stat`
/// line, counted from the state (0).
fn stat_field(stat: &str, n: usize) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n)?.parse().ok()
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
        assert_eq!(parent("812 (node server.js) S 1 812 812 0 -1"), Some(1));
        assert_eq!(process_group("garbage"), None);
        assert_eq!(parent("garbage"), None);
    }

    #[test]
    fn the_holder_named_is_the_one_that_did_not_inherit_the_socket() {
        let h = |pid, parent| Holder {
            pid,
            group: 1,
            parent,
            name: format!("p{pid}"),
        };
        let pid_of = |holders: &[Holder]| original(holders).map(|h| h.pid);
        // (holders in /proc order, the one named)
        let cases: [(&[Holder], Option<u32>); 5] = [
            (&[], None),
            (&[h(40, 1)], Some(40)),
            // A child forked by a thread of 31327 and not yet exec'd, listed first.
            (&[h(554, 31327), h(31327, 1)], Some(31327)),
            // nginx: master 10, workers 11 and 12.
            (&[h(10, 1), h(11, 10), h(12, 10)], Some(10)),
            // Each parent a holder (cannot happen in one snapshot): the first.
            (&[h(2, 3), h(3, 2)], Some(2)),
        ];
        for (holders, named) in cases {
            assert_eq!(pid_of(holders), named, "{holders:?}");
        }
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
