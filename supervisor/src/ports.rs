//! Port allocation for new workers: pure, over every port anything of rtsup holds.
//!
//! Slot `i` of an app with base port `p` and `n` instances prefers `p+i`; while an older worker
//! still holds that port (a replacement, a drain), its twin `p+n+i`; then any free port of the
//! app's own range `p .. p+2n`; then the first free port above it that no other app's range
//! and none of rtsup's own listeners claim. "Held" means held by any worker of any app in any
//! phase until it has exited, so a scale 4 → 2 → 4 never puts a new worker on a port a draining
//! one still listens on.

use std::collections::BTreeSet;
use std::ops::Range;

/// Where ports may and may not go.
#[derive(Debug, Clone, Default)]
pub(crate) struct PortMap {
    /// Ports a worker holds now.
    pub held: BTreeSet<u16>,
    /// Ranges claimed by each app (`base .. base + 2n`), by app name.
    pub ranges: Vec<(String, Range<u32>)>,
    /// rtsup's own listeners.
    pub reserved: BTreeSet<u16>,
}

impl PortMap {
    /// A free port for slot `slot` of app `app` (base `base`, `instances` slots), marked as
    /// held on return; `None` when no port is free.
    pub(crate) fn allocate(
        &mut self,
        app: &str,
        base: u16,
        instances: u16,
        slot: u16,
    ) -> Option<u16> {
        let base32 = u32::from(base);
        let n = u32::from(instances.max(1));
        let own = base32..base32 + 2 * n;
        let preferred = [base32 + u32::from(slot), base32 + n + u32::from(slot)];
        let port = preferred
            .into_iter()
            .chain(own.clone())
            .chain(own.end..=u32::from(u16::MAX))
            .filter_map(|p| u16::try_from(p).ok())
            .find(|&p| self.free_for(app, p))?;
        self.held.insert(port);
        Some(port)
    }

    fn free_for(&self, app: &str, port: u16) -> bool {
        if port == 0 || self.held.contains(&port) || self.reserved.contains(&port) {
            return false;
        }
        // Another app's configured range is never taken, even where this app's range (grown
        // by `scale`) reaches into it.
        let p = u32::from(port);
        !self
            .ranges
            .iter()
            .any(|(name, r)| name != app && r.contains(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(held: &[u16]) -> PortMap {
        PortMap {
            held: held.iter().copied().collect(),
            ranges: vec![("a".into(), 5000..5008), ("b".into(), 5008..5012)],
            reserved: [8080].into_iter().collect(),
        }
    }

    #[test]
    fn prefers_the_slot_port_then_its_twin() {
        assert_eq!(map(&[]).allocate("a", 5000, 4, 1), Some(5001));
        assert_eq!(map(&[5001]).allocate("a", 5000, 4, 1), Some(5005));
    }

    #[test]
    fn falls_back_to_the_own_range_then_above_other_apps() {
        // 4 → 2 instances: the twins of slots 0 and 1 are the old slots 2 and 3, still draining.
        assert_eq!(
            map(&[5000, 5002, 5003]).allocate("a", 5000, 2, 0),
            Some(5001)
        );
        let all_own: Vec<u16> = (5000..5008).collect();
        // Past its range: skip app b's 5008..5012.
        assert_eq!(map(&all_own).allocate("a", 5000, 4, 0), Some(5012));
    }

    #[test]
    fn never_hands_out_a_reserved_or_held_port_twice() {
        let mut m = PortMap {
            reserved: [5000].into_iter().collect(),
            ..PortMap::default()
        };
        let p1 = m.allocate("a", 5000, 1, 0);
        let p2 = m.allocate("a", 5000, 1, 0);
        assert_eq!(p1, Some(5001));
        assert_eq!(p2, Some(5002));
    }

    #[test]
    fn a_scaled_up_range_never_takes_another_apps_ports() {
        // App a scaled to 6 slots: its range would reach 5000..5012, over app b's 5008..5012.
        let held: Vec<u16> = (5000..5008).collect();
        assert_eq!(map(&held).allocate("a", 5000, 6, 0), Some(5012));
    }

    #[test]
    fn none_when_everything_is_taken() {
        let mut m = PortMap {
            held: (65530..=65535).collect(),
            ..PortMap::default()
        };
        assert_eq!(m.allocate("a", 65534, 1, 0), None);
    }
}
