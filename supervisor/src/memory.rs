//! Memory and CPU sampling of each worker's whole process tree (sysinfo).
//!
//! A worker that forks (a shell wrapper, a Node cluster) is measured with all its descendants,
//! which is what the host actually pays for.

use std::collections::HashMap;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Resource use of one process tree at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Resident set size, bytes, summed over the tree.
    pub rss_bytes: u64,
    /// CPU use since the previous sample, summed over the tree (100 = one core).
    pub cpu_percent: f32,
}

/// Owns the sysinfo state between samples (CPU use needs two consecutive refreshes).
pub struct Sampler {
    system: Option<System>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// A sampler; sysinfo failing to initialise leaves it reporting nothing.
    pub fn new() -> Self {
        Self {
            system: System::new().ok(),
        }
    }

    /// Usage of the process tree rooted at each pid in `roots`, and of every process still in
    /// its process group (a child that left the tree, e.g. `(leaker &)` in a shell, stays in
    /// the worker's group and keeps costing memory).
    pub fn sample(&mut self, roots: &[u32]) -> HashMap<u32, Usage> {
        let Some(system) = self.system.as_mut() else {
            return HashMap::new();
        };
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        let wanted: std::collections::HashSet<u32> = roots.iter().copied().collect();
        let mut groups: HashMap<u32, Vec<Pid>> = HashMap::new();
        // On Linux sysinfo may list threads as processes of their own (same RSS as their
        // process): only real processes count.
        for (pid, proc_) in system.processes() {
            if proc_.thread_kind().is_some() {
                continue;
            }
            if let Some(parent) = proc_.parent() {
                children.entry(parent).or_default().push(*pid);
            }
            if let Some(group) = crate::sockets::process_group_of(pid.as_u32())
                && wanted.contains(&group)
            {
                groups.entry(group).or_default().push(*pid);
            }
        }
        roots
            .iter()
            .map(|&root| {
                let mut usage = Usage::default();
                let mut stack = vec![Pid::from_u32(root)];
                stack.extend(groups.get(&root).into_iter().flatten().copied());
                let mut seen = std::collections::HashSet::new();
                while let Some(pid) = stack.pop() {
                    if !seen.insert(pid) {
                        continue;
                    }
                    if let Some(p) = system.process(pid).filter(|p| p.thread_kind().is_none()) {
                        usage.rss_bytes += p.memory();
                        usage.cpu_percent += p.cpu_usage();
                    }
                    if let Some(kids) = children.get(&pid) {
                        stack.extend(kids.iter().copied());
                    }
                }
                (root, usage)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_own_process_once_not_per_thread() {
        let me = std::process::id();
        let _threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2))))
            .collect();
        let usage = Sampler::new().sample(&[me]);
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let vm_rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("VmRSS");
        let rss = usage[&me].rss_bytes;
        // Same process, sampled moments apart: within a factor, never ×threads.
        assert!(
            rss > vm_rss_kb * 1024 / 2 && rss < vm_rss_kb * 1024 * 2,
            "{rss} vs {vm_rss_kb} kB"
        );
    }
}
