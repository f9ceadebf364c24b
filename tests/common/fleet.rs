//! Several gateways over one PostgreSQL database, as a fleet behind a load balancer runs: each
//! started in-process with its own `[gateway]` identity (certs/gateway: `gateway`, `gateway-b`,
//! `gateway-c`), every one trusted by the others' intakes, and one clock for all.

use std::sync::Arc;

use rxgate::{config::Config, pki::identity::IdentityFiles};

use super::{Harness, ManualClock, dev_pki, postgres, start_on};

/// The identities of a fleet's gateways, in order.
const IDENTITIES: [&str; 3] = ["gateway", "gateway-b", "gateway-c"];

/// The `[gateway]` files of identity `name` in the development PKI.
fn identity(name: &str) -> IdentityFiles {
    let dir = dev_pki().gateway().cert.parent().unwrap().to_owned();
    IdentityFiles {
        key: dir.join(format!("{name}.key.pem")),
        cert: dir.join(format!("{name}.cert.pem")),
    }
}

/// Starts `n` (at most 3) gateways over one new database, each after `adjust` changed its
/// configuration, or None when PostgreSQL is not installed.
pub(crate) async fn start(n: usize, adjust: impl Fn(&mut Config)) -> Option<Vec<Harness>> {
    let cluster = postgres::installed()?;
    let database = cluster.database();
    let clock = Arc::new(ManualClock::starting_now());
    let mut fleet = Vec::with_capacity(n);
    for name in &IDENTITIES[..n] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::dev(dir.path().join("store"), &dev_pki());
        config.store_engine = Some(rxgate::config::StoreEngine::Postgres);
        config.postgres = Some(database.clone());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.metrics_listen = "127.0.0.1:0".parse().unwrap();
        config.gateway = identity(name);
        config.intake.trusted_senders = IDENTITIES.iter().map(|i| identity(i).cert).collect();
        adjust(&mut config);
        fleet.push(start_on(config, Arc::clone(&clock), dir).await);
    }
    Some(fleet)
}

/// The configuration of a second process of `h`'s gateway: its identity and database, on new
/// ports.
pub(crate) fn twin(h: &Harness) -> Config {
    let mut config = h.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config
}
