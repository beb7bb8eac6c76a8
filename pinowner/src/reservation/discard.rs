//! [`ContigRun::discard`]: giving a run's memory back (see
//! [`crate::discard`]).

use super::ContigRun;
use crate::discard::{Discard, DiscardRefused};
use crate::handle::ArenaRef;
use crate::page::state;
use crate::sync::Ordering::Relaxed;

impl<A: ArenaRef<Policy = crate::Exact>> ContigRun<A> {
    /// Gives the run's memory back to the operating system and frees the
    /// run, as [`Block::discard`](crate::Block::discard) does for a block:
    /// a buffer pool that shrank returns the frames it reserved.
    ///
    /// # Errors
    ///
    /// [`DiscardRefused`] with the run, unchanged: as for
    /// [`Block::discard`](crate::Block::discard), for any block of the run.
    ///
    /// ```
    /// use pinowner::{discard::Discard, PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
    /// let run = arena.reserve_contig(32, 32, Reason::Shrink)?;
    /// run.discard(Discard::DontNeed).map_err(|refused| refused.error)?;
    /// assert_eq!(arena.zeroed_pages(), 32);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard(self, how: Discard) -> Result<(), DiscardRefused<Self>> {
        let blocks: Vec<(u32, u8)> = self
            .blocks
            .iter()
            // We hold each block: its order does not change under us.
            .map(|&(head, _)| (head, state::order(self.arena.desc(head).state.load(Relaxed))))
            .collect();
        match self.arena.discard_blocks(&blocks, how) {
            Ok(()) => Ok(()),
            Err(error) => Err(DiscardRefused { handle: self, error }),
        }
    }
}
