//! How much room the data disk has left, and which calls it still admits: the free-space
//! low-water mark. Below the mark, a call that would write new data (a registration, a
//! dispensing, a check that spends a budget, an import …) is refused before its transaction
//! runs, so that the room left keeps the audit records of the reads, which go on. Below half the
//! mark (the floor) every call is refused before it reaches the store: the last room is the
//! engine's, so that it never meets a full disk mid-write. Each level is left only once the free
//! space is a tenth of the mark above where it was entered, so that a disk hovering at the mark
//! does not flap. Pure: the free space is handed in by the watch that measures it
//! (`src/disk_watch.rs`); no file system is read here.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::Error;

const MIB: u64 = 1024 * 1024;

/// The configured low-water mark: the larger of a size and a share of the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowWater {
    /// In MiB.
    pub mib: u64,
    /// In percent of the file system's size.
    pub percent: u64,
}

impl LowWater {
    /// The mark on a file system of `total` bytes, in bytes (0: no mark).
    pub fn bytes(self, total: u64) -> u64 {
        let share =
            u64::try_from(u128::from(total) * u128::from(self.percent) / 100).unwrap_or(u64::MAX);
        self.mib.saturating_mul(MIB).max(share)
    }
}

/// What the free space admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// At or above the mark: every call.
    Plenty,
    /// Below the mark: reads (with their audit records), not new data.
    Low,
    /// Below half the mark: nothing that reaches the store.
    Floor,
}

impl Level {
    /// The level `free` bytes make of `self` under a mark of `mark` bytes: entered below its
    /// threshold, left only a tenth of the mark above it.
    fn next(self, free: u64, mark: u64) -> Level {
        let (floor, margin) = (mark / 2, mark / 10);
        let to_plenty = mark.saturating_add(margin);
        let to_low = floor.saturating_add(margin);
        match self {
            _ if free < floor => Level::Floor,
            Level::Floor if free < to_low => Level::Floor,
            Level::Floor | Level::Low if free < to_plenty => Level::Low,
            Level::Plenty if free < mark => Level::Low,
            _ => Level::Plenty,
        }
    }

    fn from_u8(n: u8) -> Level {
        match n {
            0 => Level::Plenty,
            1 => Level::Low,
            _ => Level::Floor,
        }
    }
}

/// A change of level, for the watch to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: Level,
    pub to: Level,
}

/// The disk's room as last measured, shared by the watch that measures it and the calls it
/// admits. Plenty until the first measurement.
#[derive(Debug, Default)]
pub struct Room {
    level: AtomicU8,
    free: AtomicU64,
    mark: AtomicU64,
}

impl Room {
    /// Takes a measurement: `free` bytes free under a mark of `mark` bytes. Returns the change
    /// of level it made, if any. Called by one watch only (a read, then a write).
    pub fn observe(&self, free: u64, mark: u64) -> Option<Change> {
        self.free.store(free, Ordering::Relaxed);
        self.mark.store(mark, Ordering::Relaxed);
        let from = self.level();
        let to = from.next(free, mark);
        self.level.store(to as u8, Ordering::Release);
        (from != to).then_some(Change { from, to })
    }

    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Acquire))
    }

    /// Why writes are refused, while they are: the error a refused call answers.
    pub fn shortage(&self) -> Option<Error> {
        (self.level() != Level::Plenty).then(|| self.refusal())
    }

    /// The error a refused call answers, with the room as last measured.
    fn refusal(&self) -> Error {
        Error::DiskLow {
            free_mib: self.free.load(Ordering::Relaxed) / MIB,
            low_water_mib: self.mark.load(Ordering::Relaxed) / MIB,
        }
    }

    /// Whether a call that `writes` new data (`Action::writes_new_data`) or not may run now:
    /// `Ok`, or the refusal and whether its audit record may still be written (not at the
    /// floor).
    pub(super) fn admit(&self, writes: bool) -> Result<(), Refused> {
        let level = self.level();
        match level {
            Level::Plenty => Ok(()),
            Level::Low if !writes => Ok(()),
            Level::Low | Level::Floor => Err(Refused {
                error: self.refusal(),
                audited: level == Level::Low,
            }),
        }
    }
}

/// A call the free space does not admit.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) error: Error,
    /// The refusal's own audit record may be written (below the mark, above the floor).
    pub(super) audited: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: u64 = 100 * MIB;
    const WRITES: bool = true;
    const READS: bool = false;

    #[test]
    fn the_mark_is_the_larger_of_its_size_and_its_share() {
        let default = LowWater {
            mib: 256,
            percent: 5,
        };
        assert_eq!(default.bytes(1024 * MIB), 256 * MIB);
        assert_eq!(default.bytes(100 * 1024 * MIB), 5 * 1024 * MIB);
        let off = LowWater { mib: 0, percent: 0 };
        assert_eq!(off.bytes(u64::MAX), 0);
        let all = LowWater {
            mib: u64::MAX,
            percent: 50,
        };
        assert_eq!(all.bytes(u64::MAX), u64::MAX);
    }

    #[test]
    fn levels_are_entered_below_their_threshold_and_left_a_tenth_above_it() {
        let cases = [
            (Level::Plenty, MARK, Level::Plenty),
            (Level::Plenty, MARK - 1, Level::Low),
            (Level::Plenty, MARK / 2 - 1, Level::Floor),
            (Level::Low, MARK, Level::Low),
            (Level::Low, MARK + MARK / 10 - 1, Level::Low),
            (Level::Low, MARK + MARK / 10, Level::Plenty),
            (Level::Low, MARK / 2 - 1, Level::Floor),
            (Level::Floor, MARK / 2, Level::Floor),
            (Level::Floor, MARK / 2 + MARK / 10, Level::Low),
            (Level::Floor, MARK + MARK / 10, Level::Plenty),
        ];
        for (from, free, to) in cases {
            assert_eq!(from.next(free, MARK), to, "{from:?} with {free} free");
        }
        for from in [Level::Plenty, Level::Low, Level::Floor] {
            assert_eq!(from.next(0, 0), Level::Plenty, "no mark: always plenty");
        }
    }

    #[test]
    fn below_the_mark_writes_are_refused_and_audited_and_reads_go_on() {
        let room = Room::default();
        assert!(room.admit(WRITES).is_ok(), "unmeasured");
        let change = room.observe(MARK - MIB, MARK);
        assert_eq!(
            change,
            Some(Change {
                from: Level::Plenty,
                to: Level::Low
            })
        );
        let refused = room.admit(WRITES).unwrap_err();
        assert!(refused.audited);
        assert_eq!(
            refused.error,
            Error::DiskLow {
                free_mib: 99,
                low_water_mib: 100
            }
        );
        assert!(room.admit(READS).is_ok());
        assert_eq!(room.observe(MARK - 2 * MIB, MARK), None, "no change");

        room.observe(MIB, MARK);
        let refused = room.admit(READS).unwrap_err();
        assert!(!refused.audited, "at the floor nothing reaches the store");

        assert!(room.observe(2 * MARK, MARK).is_some());
        assert!(room.admit(WRITES).is_ok());
        assert_eq!(room.shortage(), None);
    }
}
