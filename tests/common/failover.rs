//! The database side of the failover drill (tests/it/failover.rs): a primary and a synchronous
//! streaming standby, clusters of their own beside the shared one, made as an operator makes
//! them — `pg_basebackup` from the primary, the standby's `application_name` listed in the
//! primary's `synchronous_standby_names`, `synchronous_commit = on` — and checked to be in step
//! (`pg_stat_replication.sync_state = 'sync'`) before a test writes.

use std::time::{Duration, Instant};

use rxgate::store::PostgresConfig;

use super::postgres::{self, Cluster};

/// The standby's `application_name`, which the primary waits for at every commit.
const STANDBY: &str = "standby";

/// A primary, its synchronous standby, and a migrated database on them.
pub(crate) struct Pair {
    pub primary: Cluster,
    pub standby: Cluster,
    /// The database's `[postgres]` settings on the primary alone (its name, password and CA
    /// files: the standby's are copies).
    pub database: PostgresConfig,
}

impl Pair {
    /// Makes the pair, or None (said on stderr) when PostgreSQL is not installed outside CI.
    /// `synchronous_standby_names` is set on the primary before the base backup, with
    /// `ALTER SYSTEM`, so that the standby inherits it as a real one does.
    pub(crate) fn start() -> Option<Pair> {
        if !postgres::wanted_here() {
            return None;
        }
        let primary = Cluster::own("primary", "synchronous_commit = on\n");
        let database = primary.database();
        primary.sql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY}'"
        ));
        primary.sql("SELECT pg_reload_conf()");
        let standby = primary.standby(STANDBY);
        let pair = Pair {
            primary,
            standby,
            database,
        };
        pair.until_in_step();
        Some(pair)
    }

    /// Waits until the primary calls its standby synchronous.
    fn until_in_step(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let state = || {
            self.primary.sql(&format!(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY}'"
            ))
        };
        while state().trim() != "sync" {
            assert!(
                Instant::now() < deadline,
                "the standby never became synchronous"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateways' URL: both servers, the one that takes writes chosen at each connection.
    pub(crate) fn url(&self) -> String {
        let name = self.database.url.rsplit('/').next().unwrap();
        format!(
            "postgresql://rxgate_app@127.0.0.1:{},127.0.0.1:{}/{name}\
             ?target_session_attrs=read-write",
            self.primary.port(),
            self.standby.port(),
        )
    }

    /// The primary is lost (SIGKILL of its postmaster) and the standby promoted; returns when
    /// `pg_ctl promote` does. What the standby inherited of `synchronous_standby_names` is
    /// left: [`Pair::stand_alone`] clears it.
    pub(crate) fn fail_over(&self) -> Instant {
        self.primary.kill();
        let killed = Instant::now();
        self.standby.promote();
        let promoted = Instant::now();
        eprintln!(
            "failover: pg_ctl promote returned {:?} after the primary was killed",
            promoted - killed
        );
        promoted
    }

    /// The new primary stops waiting for a standby it does not have: without this, every
    /// commit would wait for ever.
    pub(crate) fn stand_alone(&self) {
        self.standby
            .sql("ALTER SYSTEM SET synchronous_standby_names = ''");
        self.standby.sql("SELECT pg_reload_conf()");
    }
}
