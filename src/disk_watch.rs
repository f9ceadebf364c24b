//! The free-space watch: measures the data folder's file system (statvfs) and hands the result to
//! the gateway's [`Room`], which decides what the calls are admitted by (service/free_space.rs).
//! Logs one WARN line when the disk goes below the low-water mark or its floor and one INFO line
//! when it has room again, and keeps the `rxgate_disk_*` gauges. A look is a system call on a file
//! system that may hang (a network mount): the composition root runs it on the blocking pool.
//! Knows nothing of gRPC or the store.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use crate::{
    log_throttle::LogThrottle,
    metrics::Metrics,
    service::{Change, Level, LowWater, Room},
};

/// A statvfs that fails is logged at most once an hour; the room stays as last measured.
static UNMEASURED: LogThrottle = LogThrottle::new(Duration::from_secs(3600));

/// What the watch measures and where it tells it.
pub(crate) struct DiskWatch {
    /// The data folder.
    pub(crate) dir: PathBuf,
    pub(crate) low_water: LowWater,
    pub(crate) room: Arc<Room>,
    pub(crate) metrics: Arc<Metrics>,
}

impl DiskWatch {
    /// Measures the free space once and passes it on. Blocking.
    pub(crate) fn look(&mut self) {
        let stat = match rustix::fs::statvfs(&self.dir) {
            Ok(stat) => stat,
            Err(e) => {
                if let Some(left_out) = UNMEASURED.allow() {
                    tracing::warn!(dir = %self.dir.display(), error = %e, left_out,
                        "the data disk's free space could not be measured");
                }
                return;
            }
        };
        // Available to the gateway's user: the blocks reserved for root are not counted.
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let mark = self
            .low_water
            .bytes(stat.f_blocks.saturating_mul(stat.f_frsize));
        let change = self.room.observe(free, mark);
        self.metrics.disk_free_bytes.store(free, Ordering::Relaxed);
        self.metrics
            .disk_low_water_bytes
            .store(mark, Ordering::Relaxed);
        let low = self.room.level() != Level::Plenty;
        self.metrics
            .disk_low_water
            .store(low.into(), Ordering::Relaxed);
        if let Some(change) = change {
            self.log(change, free, mark);
        }
    }

    fn log(&self, change: Change, free: u64, mark: u64) {
        const MIB: u64 = 1024 * 1024;
        let (dir, free_mib, low_water_mib) = (self.dir.display(), free / MIB, mark / MIB);
        match change.to {
            Level::Low if change.from == Level::Plenty => {
                tracing::warn!(%dir, free_mib, low_water_mib,
                    "the data disk is below its low-water mark: new data is refused \
                     (RESOURCE_EXHAUSTED, health NOT_SERVING), reads go on; free space");
            }
            Level::Low => tracing::warn!(%dir, free_mib, low_water_mib,
                "the data disk is back above half its low-water mark: reads go on again, new \
                 data is still refused"),
            Level::Floor => tracing::warn!(%dir, free_mib, low_water_mib,
                "the data disk is below half its low-water mark: every call is refused, reads \
                 too, so that the store never meets a full disk; free space"),
            Level::Plenty => tracing::info!(%dir, free_mib, low_water_mib,
                "the data disk has room again: new data is taken"),
        }
    }
}
