//! Fragmentation statistics: why a high-order request cannot be served.

use super::ZoneKind;

/// Free memory of one zone, by order.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ZoneFrag {
    /// The zone.
    pub zone: ZoneKind,
    /// Pages in the zone.
    pub pages: usize,
    /// Free blocks in the buddy lists, per order (index = order).
    pub free_blocks: Vec<usize>,
    /// Free pages in the buddy lists.
    pub free_pages: usize,
    /// Free pages parked in per-thread caches (blocks of every cached order).
    pub cached_pages: usize,
    /// The longest run of adjacent free pages in the buddy lists (it may span
    /// several maximal blocks).
    pub largest_free_run: usize,
    /// Of [`free_blocks`](Self::free_blocks), the blocks whose memory the
    /// free page reporter gave back, per order (see [`crate::reporting`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub reported_blocks: Vec<usize>,
    /// Pages in those blocks.
    #[cfg_attr(feature = "serde", serde(default))]
    pub reported_pages: usize,
    /// Free pages the reporter has off the lists right now (a batch in
    /// flight), counted in no other field.
    #[cfg_attr(feature = "serde", serde(default))]
    pub reporting_pages: usize,
    /// Free pages holding the poison pattern, to be checked when handed
    /// out (page poisoning's pattern mode: see [`crate::poison`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub poisoned_pages: usize,
}

impl ZoneFrag {
    /// The order of the largest free block, if any.
    pub fn largest_order(&self) -> Option<u8> {
        self.free_blocks.iter().rposition(|&n| n > 0).map(|o| o as u8)
    }

    /// The kernel's unusable free space index for `order`: the fraction of
    /// free pages that sit in blocks too small to serve an allocation of that
    /// order (0.0 all usable, 1.0 none usable; 0.0 when nothing is free).
    ///
    /// Statistics read back from JSON may not add up (a hand-edited or
    /// corrupted report): the index stays within 0.0..=1.0 and never
    /// panics, whatever the fields say.
    pub fn unusable_index(&self, order: u8) -> f64 {
        if self.free_pages == 0 {
            return 0.0;
        }
        let usable = self
            .free_blocks
            .iter()
            .enumerate()
            .skip(order as usize)
            .fold(0usize, |sum, (o, &n)| sum.saturating_add(pages_in(n, o)));
        self.free_pages.saturating_sub(usable) as f64 / self.free_pages as f64
    }

    /// The kernel's external fragmentation index for `order`: `None` when a
    /// free block of that order exists (the request can be served); near 0
    /// when failure is for lack of memory, near 1 when it is because of
    /// fragmentation.
    pub fn fragmentation_index(&self, order: u8) -> Option<f64> {
        if self.largest_order().is_some_and(|l| l >= order) {
            return None;
        }
        let blocks = self.free_blocks.iter().fold(0usize, |sum, &n| sum.saturating_add(n));
        if blocks == 0 {
            return Some(0.0);
        }
        let requested = 2f64.powi(i32::from(order));
        Some(1.0 - (1.0 + self.free_pages as f64 / requested) / blocks as f64)
    }
}

/// Pages in `n` blocks of `order`, saturating (an order past the word size,
/// or a count that overflows, from a report that does not add up).
fn pages_in(n: usize, order: usize) -> usize {
    match u32::try_from(order).ok().and_then(|o| 1usize.checked_shl(o)) {
        Some(per) => n.saturating_mul(per),
        None if n == 0 => 0,
        None => usize::MAX,
    }
}

/// Fragmentation statistics of an arena, one entry per zone.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FragStats {
    /// Per zone, normal first. A zone of zero pages is left out.
    pub zones: Vec<ZoneFrag>,
}

impl FragStats {
    /// The statistics of one zone.
    pub fn zone(&self, zone: ZoneKind) -> Option<&ZoneFrag> {
        self.zones.iter().find(|z| z.zone == zone)
    }
}

impl core::fmt::Display for FragStats {
    /// A table in the spirit of `/proc/buddyinfo` and
    /// `/sys/kernel/debug/extfrag/unusable_index`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for z in &self.zones {
            write!(f, "zone {:>7} free blocks:", z.zone.to_string())?;
            for n in &z.free_blocks {
                write!(f, " {n:>5}")?;
            }
            writeln!(f)?;
            write!(f, "zone {:>7} unusable:   ", z.zone.to_string())?;
            for o in 0..z.free_blocks.len() {
                // Orders past 255 (only in a report that does not add up)
                // have no block to serve them: index 1.0.
                let index = u8::try_from(o).map_or(1.0, |o| z.unusable_index(o));
                write!(f, " {index:>5.3}")?;
            }
            writeln!(f)?;
            writeln!(
                f,
                "zone {:>7} {} of {} pages free, {} cached, largest free run {} pages",
                z.zone.to_string(),
                z.free_pages,
                z.pages,
                z.cached_pages,
                z.largest_free_run
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(free_blocks: Vec<usize>) -> ZoneFrag {
        let free_pages = free_blocks.iter().enumerate().map(|(o, n)| n << o).sum();
        ZoneFrag {
            zone: ZoneKind::Normal,
            pages: 1024,
            free_blocks,
            free_pages,
            cached_pages: 0,
            largest_free_run: 0,
            reported_blocks: Vec::new(),
            reported_pages: 0,
            reporting_pages: 0,
            poisoned_pages: 0,
        }
    }

    #[test]
    fn unusable_index_counts_pages_in_blocks_too_small() {
        // 4 order-0 pages and 1 order-2 block: 8 free pages.
        let z = frag(vec![4, 0, 1]);
        assert_eq!(z.unusable_index(0), 0.0);
        assert_eq!(z.unusable_index(1), 0.5);
        assert_eq!(z.unusable_index(2), 0.5);
        assert_eq!(z.unusable_index(3), 1.0);
    }

    #[test]
    fn fragmentation_index_is_high_when_memory_is_free_but_scattered() {
        let scattered = frag(vec![64, 0, 0, 0]);
        let i = scattered.fragmentation_index(3).unwrap();
        assert!(i > 0.8, "{i}");
        let served = frag(vec![0, 0, 0, 1]);
        assert_eq!(served.fragmentation_index(3), None);
    }
}
