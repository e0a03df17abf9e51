//! Sliding replay window over transport counters (wire-spec §5.8), a bitmap in the style of
//! RFC 6479: O(1) per packet, no allocation. Counters more than `WINDOW` behind the highest
//! accepted one are too old; counters inside the window are accepted once.

/// Bitmap words (2048 bits).
const WORDS: usize = 32;
/// Window size: a counter `c` is too old when `highest - c >= WINDOW` (1984).
pub const WINDOW: u64 = (WORDS as u64 - 1) * 64;

/// Why a counter was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ReplayError {
    /// Already accepted.
    #[error("replayed counter")]
    Duplicate,
    /// Behind the window.
    #[error("counter older than the replay window")]
    TooOld,
}

/// The replay window of one receiving session.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// Highest accepted counter + 1 (0 = nothing accepted yet).
    next: u64,
    bits: [u64; WORDS],
}

fn slot(c: u64) -> (usize, u64) {
    (((c / 64) % WORDS as u64) as usize, 1u64 << (c % 64))
}

impl ReplayWindow {
    /// Whether `c` would be accepted. Call `update` only after the packet authenticated.
    pub fn check(&self, c: u64) -> Result<(), ReplayError> {
        if c >= self.next {
            return Ok(());
        }
        if self.next - c > WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (w, bit) = slot(c);
        match self.bits.get(w) {
            Some(word) if word & bit == 0 => Ok(()),
            _ => Err(ReplayError::Duplicate),
        }
    }

    /// Marks `c` as seen, sliding the window forward if `c` is the new highest.
    pub fn update(&mut self, c: u64) {
        if c >= self.next {
            let new_block = c / 64;
            if self.next == 0 {
                self.bits = [0; WORDS];
            } else {
                let old_block = (self.next - 1) / 64;
                let diff = new_block - old_block;
                if diff >= WORDS as u64 {
                    self.bits = [0; WORDS];
                } else {
                    for i in 1..=diff {
                        if let Some(w) = self.bits.get_mut(((old_block + i) % WORDS as u64) as usize) {
                            *w = 0;
                        }
                    }
                }
            }
            self.next = c + 1;
        }
        let (w, bit) = slot(c);
        if let Some(word) = self.bits.get_mut(w) {
            *word |= bit;
        }
    }

    /// Check then update.
    pub fn accept(&mut self, c: u64) -> Result<(), ReplayError> {
        self.check(c)?;
        self.update(c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::default();
        for c in 0..5000 {
            assert_eq!(w.accept(c), Ok(()));
            assert_eq!(w.accept(c), Err(ReplayError::Duplicate));
        }
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::default();
        w.accept(3000).unwrap();
        // The oldest counter still accepted is WINDOW - 1 behind the highest.
        w.accept(3000 - (WINDOW - 1)).unwrap();
        assert_eq!(w.accept(3000 - WINDOW), Err(ReplayError::TooOld));
        w.accept(2999).unwrap();
        assert_eq!(w.accept(2999), Err(ReplayError::Duplicate));
        // A big jump forgets everything below the new window.
        w.accept(100_000).unwrap();
        assert_eq!(w.accept(2999), Err(ReplayError::TooOld));
        w.accept(100_000 - 1).unwrap();
    }

    proptest! {
        /// Against a model: accepted iff not seen before and within WINDOW of the max seen.
        #[test]
        fn matches_model(cs in proptest::collection::vec(0u64..6000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut max: Option<u64> = None;
            for c in cs {
                let fresh = !seen.contains(&c);
                let in_window = match max { None => true, Some(m) => c > m || m - c < WINDOW };
                let expect = fresh && in_window;
                prop_assert_eq!(w.accept(c).is_ok(), expect, "counter {}", c);
                if expect { seen.insert(c); max = Some(max.map_or(c, |m| m.max(c))); }
            }
        }
    }
}
