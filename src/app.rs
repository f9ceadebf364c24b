//! The composition root: opens the store, loads the trust material, builds the gateway and the
//! gRPC server over mutual TLS, runs the background tasks (CRL reloads, the expiry sweep) under
//! the watch of `lifecycle`, drains when asked and closes the store however it ended. The only
//! module that picks a real clock or names every outer ring together.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tonic::transport::Server as TonicServer;

use crate::{
    config::Config,
    disk_watch::DiskWatch,
    grpc::{
        EdgeAuditLayer, FairnessGuard, GuardLayer, Health, MAX_MESSAGE_BYTES, MetricsLayer,
        Services, StreamCap, StreamCount, UnaryDeadline, streaming_paths,
    },
    lifecycle::{self, Ending, Steps, Tasks},
    log_throttle::LogThrottle,
    opened_store::OpenedStore,
    ops,
    pki::identity::GatewayIdentity,
    readiness::Readiness,
    service::{self, Clock, Gateway, Sweep, acknowledged},
    store::{self, EmbeddedStore, Store},
    tls,
    wire::proto::{
        DESCRIPTOR_SET,
        v1::{
            admin_service_server::AdminServiceServer,
            dispensing_service_server::DispensingServiceServer,
            event_service_server::EventServiceServer,
            management_intake_server::ManagementIntakeServer,
            prescription_service_server::PrescriptionServiceServer,
        },
    },
};

/// How often the gRPC health service looks at the store (a drain is reported at once).
const HEALTH_PERIOD: Duration = Duration::from_secs(1);

/// How often the data disk's free space is measured (a statvfs: microseconds) and the store is
/// asked whether it failed. A disk filling faster than the low-water mark in a second is not
/// caught by the mark; the exit on a failed store is what remains for it.
const DISK_PERIOD: Duration = Duration::from_secs(1);

/// How often the acknowledged mark is brought up to date: at most this much of what was
/// acknowledged before a crash goes unchecked at the next start.
const MARK_PERIOD: Duration = Duration::from_secs(1);

/// A running server.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Where the Prometheus text is served (`GET /metrics`).
    pub metrics_addr: SocketAddr,
    /// Asks for the drain; dropped, it asks too.
    stops: mpsc::UnboundedSender<()>,
    /// Serves, drains, closes the store; says how it ended.
    task: JoinHandle<anyhow::Result<Ending>>,
}

impl Server {
    /// Begins the drain ([`lifecycle::supervise`]); asking again changes nothing.
    pub fn stop(&self) {
        let _ = self.stops.send(());
    }

    /// Waits until the server has ended, drained or not, and closed the store. Cancel-safe.
    pub async fn stopped(&mut self) -> anyhow::Result<Ending> {
        (&mut self.task).await.context("server task")?
    }

    /// Stops, lets the calls in flight finish, closes the store; an error unless it drained.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop();
        match self.stopped().await? {
            Ending::Drained => Ok(()),
            ending => anyhow::bail!("the server stopped uncleanly: {ending}"),
        }
    }
}

/// Calls `look` on `state` every `period`, on the blocking pool (it reads, hashes and maybe
/// parses files), for as long as the task runs.
async fn every_off_runtime<T: Send + 'static>(
    period: Duration,
    mut state: T,
    look: impl Fn(&mut T) + Clone + Send + 'static,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let look = look.clone();
        state = match tokio::task::spawn_blocking(move || {
            look(&mut state);
            state
        })
        .await
        {
            Ok(state) => state,
            // A panic in the reload panics this task, so that the supervisor names it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                tracing::error!(error = %e, "a periodic file reload was cancelled; it stops");
                return;
            }
        };
    }
}

/// How often the event sequencer looks for other gateways' pending events (its own it numbers
/// as soon as they commit).
const SEQUENCER_POLL: Duration = Duration::from_millis(100);

/// How often a gateway over a store that others write reads the imports' version, and so how
/// soon an import through another gateway is in force here too.
const IMPORT_POLL: Duration = Duration::from_secs(2);

/// While the expiry sweep is held, the ERROR line is repeated at most once an hour.
static SWEEP_HELD: LogThrottle = LogThrottle::new(Duration::from_secs(3600));

/// Logs what an expiry sweep did, `was_held` saying whether the one before was held; says
/// whether this one was. A hold is an ERROR line when it begins, then hourly; its end a WARN.
fn log_sweep(swept: Result<Sweep, service::Error>, was_held: bool) -> bool {
    match swept {
        Ok(Sweep::Held { step }) => {
            let repeat = SWEEP_HELD.allow().is_some();
            if !was_held || repeat {
                tracing::error!(
                    step_secs = step.as_secs(),
                    "the wall clock stepped forward beyond clock_step_tolerance_secs: the expiry \
                     sweep is held until it comes back or an operator confirms it (rxgate admin \
                     confirm-clock)"
                );
            }
            return true;
        }
        Ok(Sweep::Swept(n)) => {
            if was_held {
                tracing::warn!(
                    "the expiry sweep resumed: the wall clock came back or was confirmed"
                );
            }
            if n > 0 {
                tracing::info!(expired = n, "expiry sweep");
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
    }
    false
}

/// Writes an audit checkpoint if the chains moved; a failure is logged (the next one binds the
/// same heads).
async fn checkpoint(gateway: &Gateway, identity: &Arc<GatewayIdentity>) {
    if let Err(e) = gateway.checkpoint_audit(Arc::clone(identity)).await {
        tracing::warn!(error = %e, "audit checkpoint failed");
    }
}

/// Watches what only an embedded store in `dir` needs watched: its disk's free space (measured
/// once before the first call is taken, so that a start on a nearly full disk refuses new data
/// from its first call) and its failure, which ends the process.
async fn watch_embedded(
    background: &mut Tasks,
    config: &Config,
    gateway: &Gateway,
    (store, dir): (&Arc<EmbeddedStore>, &PathBuf),
) -> anyhow::Result<()> {
    let mut disk = DiskWatch {
        dir: dir.clone(),
        low_water: config.low_water(),
        room: Arc::clone(gateway.room()),
        metrics: Arc::clone(gateway.metrics()),
    };
    let disk = tokio::task::spawn_blocking(move || {
        disk.look();
        disk
    })
    .await
    .context("measuring the data disk")?;
    background.spawn(
        "disk watch",
        every_off_runtime(DISK_PERIOD, disk, DiskWatch::look),
    );
    background.spawn("store", until_store_fails(Arc::clone(store), dir.clone()));
    Ok(())
}

/// Returns once the store refuses every transaction (a write or a flush failed, or its writer
/// stopped), which ends the server with exit status 1, so that a service manager restarts it:
/// a gateway that answers every call INTERNAL helps nobody. Says so in one ERROR line; a full
/// disk, by name. What it acknowledged is durable, for an answer waits for the flush.
async fn until_store_fails(store: Arc<EmbeddedStore>, dir: PathBuf) {
    let mut tick = tokio::time::interval(DISK_PERIOD);
    let error = loop {
        tick.tick().await;
        if let Some(error) = store.failure() {
            break error;
        }
    };
    let dir = dir.display();
    if matches!(error, store::Error::NoSpace(_)) {
        tracing::error!(%error, "the store failed: no space left on device in {dir}; free \
            space and restart — every acknowledged write is durable");
    } else {
        tracing::error!(%error, "the store failed in {dir}; restart (the store recovers at \
            opening) — every acknowledged write is durable");
    }
}

/// Who started this process, as the host knows them, for the audit record of an accepted data
/// loss: the user who ran sudo, else the user, and the host's name.
fn started_by() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok())
        .unwrap_or_else(|| "an unnamed user".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user} on {}", host.trim())
}

/// Binds `config.listen` and starts serving; returns once the server accepts connections.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Server> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;

    let opened = OpenedStore::open(&config).await?;
    let store = opened.store();
    let (verifier, crl_watcher) = config
        .signing
        .load(config.verifier_config()?)
        .context("loading the document-signing trust")?;
    let verifier = Arc::new(verifier);
    let (server_tls, tls_reloader) = config.tls.load().context("loading the TLS material")?;

    let dyn_store = Arc::clone(&store);
    // A store of a newer layout is refused before its counters are read as this one's.
    service::layout::check(&store)
        .await
        .with_context(|| format!("opening the store {}", config.data_dir.display()))?;
    let behind = acknowledged::compare(&dyn_store, config.data_dir.clone())
        .await
        .with_context(|| format!("opening the store {}", config.data_dir.display()))?;
    if !behind.shortfalls.is_empty() && !config.accept_data_loss {
        return Err(behind.into());
    }
    service::layout::upgrade(&dyn_store, &config.pseudonyms()?)
        .await
        .with_context(|| format!("opening the store {}", config.data_dir.display()))?;
    let shipped = service::Shipped {
        masters_dir: config.checks.masters_dir.clone(),
        contraindications: config.checks.contraindications.clone(),
    };
    // Its error names what it was loading.
    let clinical = service::load_clinical(&shipped, &dyn_store).await?;

    let gateway = Arc::new(Gateway::new(
        dyn_store,
        Arc::clone(&verifier),
        clock,
        Arc::new(clinical),
        config.gateway_config()?,
    ));
    // Before this process writes an audit record: its chains are its identity's alone.
    gateway
        .claim_identity()
        .await
        .context("claiming the [gateway] identity")?;
    if !behind.shortfalls.is_empty() {
        tracing::error!(
            "{behind}: going on as --accept-data-loss asks; the counters move past the mark"
        );
        gateway
            .accept_data_loss(behind, &started_by())
            .await
            .context("recording the accepted data loss")?;
        // At once, so that a start that fails from here on is not refused again.
        acknowledged::save(&store, config.data_dir.clone(), None)
            .await
            .context("saving the acknowledged mark")?;
    }
    let services = Services::new(Arc::clone(&gateway), config.network.feed_limits());
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics port {}", config.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;

    let room = Arc::clone(gateway.room());
    let readiness = Arc::new(Readiness::new(
        {
            let store = Arc::clone(&store);
            move || store.failure()
        },
        move || room.shortage().map(|e| e.to_string()),
        {
            let gateway = Arc::downgrade(&gateway);
            move || gateway.upgrade()?.clinical_stale()
        },
    ));
    let (health, health_service) = Health::start(Arc::clone(&readiness)).await;
    // v1, and v1alpha beside it for the clients that speak only that (Python's grpcio-reflection).
    let reflecting = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflecting()
        .build_v1()
        .context("building server reflection")?;
    let reflection_v1alpha = reflecting()
        .build_v1alpha()
        .context("building server reflection (v1alpha)")?;

    let refresh = Duration::from_secs(config.crl_refresh_secs.max(1));
    let mut background = Tasks::default();
    background.spawn(
        "TLS reload",
        every_off_runtime(refresh, tls_reloader, |reloader| {
            if let Err(e) = reloader.refresh() {
                tracing::warn!(error = %e, "TLS configuration not reloaded; the old one stays");
            }
        }),
    );
    let crl_verifier = Arc::clone(&verifier);
    background.spawn(
        "signing CRL reload",
        every_off_runtime(refresh, crl_watcher, move |watcher| {
            match watcher.refresh(&crl_verifier) {
                Ok(Some(generation)) => tracing::info!(generation, "signing CRLs reloaded"),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "signing CRLs not reloaded; the old ones stay")
                }
            }
        }),
    );
    gateway.number_imported_events().await?;
    let sweeper = Arc::clone(&gateway);
    let sweep_every = Duration::from_secs(config.expiry_sweep_secs.max(1));
    background.spawn("expiry sweep", async move {
        let mut held = false;
        loop {
            held = log_sweep(sweeper.sweep_expired().await, held);
            tokio::time::sleep(sweeper.until_next_day().min(sweep_every)).await;
        }
    });

    // A store one process opens at a time needs neither: every import is this gateway's own,
    // and nobody else could take the claim.
    if !store.serial() {
        let watcher = Arc::clone(&gateway);
        background.spawn("import watch", async move {
            watcher.follow_imports(shipped, IMPORT_POLL).await;
        });
        let claimant = Arc::clone(&gateway);
        background.spawn("identity claim", async move {
            claimant.keep_identity_claim().await;
        });
    }
    let sequencer = Arc::clone(&gateway);
    background.spawn("event sequencer", async move {
        sequencer.sequence_events(SEQUENCER_POLL).await;
    });

    let counter = Arc::clone(&gateway);
    background.spawn("stuck count", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match counter.stuck(counter.stuck_after()).await {
                Ok(stuck) => counter
                    .metrics()
                    .stuck
                    .store(stuck.len() as u64, std::sync::atomic::Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "counting stuck prescriptions failed"),
            }
        }
    });
    let identity = Arc::new(config.gateway_identity()?);
    if let Some(relay) = &config.relay {
        background.spawn(
            "relay",
            crate::relay::run(
                Arc::clone(&gateway),
                relay.relay_config(Arc::clone(&identity)),
            ),
        );
    }
    let checkpointer = Arc::clone(&gateway);
    let checkpoint_every = Duration::from_secs(config.audit_checkpoint_secs.max(1));
    let signer = Arc::clone(&identity);
    // The start's checkpoint is written before the first call is taken, so that it binds what
    // the store held at the start (a crash's unbound links, another gateway's chain) and no
    // call races it; the next ones follow a period apart.
    checkpoint(&checkpointer, &signer).await;
    background.spawn("audit checkpoint", async move {
        let first = tokio::time::Instant::now() + checkpoint_every;
        let mut tick = tokio::time::interval_at(first, checkpoint_every);
        loop {
            tick.tick().await;
            checkpoint(&checkpointer, &signer).await;
        }
    });
    let pruner = Arc::clone(&gateway);
    let retention_ms = i64::from(config.event_retention_days) * 86_400_000;
    let relaying = config.relay.is_some();
    background.spawn("retention", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match pruner.prune_lockouts().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "ended lockout entries"),
                Err(e) => tracing::warn!(error = %e, "pruning ended lockout entries failed"),
            }
            // Never past what the relay has not delivered yet.
            let keep_from = if relaying {
                match pruner.relay_position().await {
                    Ok(acked) => Some(acked + 1),
                    Err(_) => continue,
                }
            } else {
                None
            };
            match pruner.prune_events(retention_ms, keep_from).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "event log retention"),
                Err(e) => tracing::warn!(error = %e, "event log retention failed"),
            }
        }
    });
    background.spawn(
        "acknowledged mark",
        acknowledged::keep(store.clone(), config.data_dir.clone(), MARK_PERIOD),
    );
    if let OpenedStore::Embedded(embedded, dir) = &opened {
        watch_embedded(&mut background, &config, &gateway, (embedded, dir)).await?;
    }
    background.spawn("health", Arc::clone(&health).follow(HEALTH_PERIOD));
    let page = ops::Page::new(Arc::clone(&gateway), store.clone(), Arc::clone(&verifier));
    background.spawn(
        "metrics port",
        ops::serve(metrics_listener, page, readiness),
    );
    let network = &config.network;
    let standard = [
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let descriptors = |e| anyhow::anyhow!("reading the service descriptors: {e}");
    let streaming = Arc::new(
        streaming_paths(&[&[DESCRIPTOR_SET][..], &standard].concat()).map_err(descriptors)?,
    );
    let standard_streams = StreamCap::new(
        streaming_paths(&standard).map_err(descriptors)?,
        network.health_reflection_streams_per_institution,
    );
    // Layers in order from the outside in: everything is measured, refusals included; what no
    // handler audits is audited as answered (the rewrites below applied); every
    // call counts as an open stream of its connection (against the idle timeout); the fairness
    // limits and the cap on health and reflection streams refuse before a request's body is
    // read; the deadline covers the handler.
    let edge_audit = EdgeAuditLayer::new(Arc::clone(&gateway), network.edge_audit_per_second);
    let router = TonicServer::builder()
        .max_concurrent_streams(network.max_concurrent_streams)
        .http2_keepalive_interval(Some(network.http2_keepalive_interval()))
        .http2_keepalive_timeout(Some(network.http2_keepalive_timeout()))
        .layer(MetricsLayer::new(Arc::clone(gateway.metrics())))
        .layer(edge_audit.clone())
        .layer(tower::util::MapResponseLayer::new(
            crate::grpc::oversize_is_resource_exhausted,
        ))
        .layer(tower::util::MapResponseLayer::new(
            crate::grpc::undecodable_is_invalid_argument,
        ))
        .layer(GuardLayer::new(StreamCount))
        .layer(GuardLayer::new(FairnessGuard::new(
            network.fairness_policy().map_err(anyhow::Error::msg)?,
            Arc::clone(&streaming),
        )))
        .layer(GuardLayer::new(standard_streams))
        .layer(GuardLayer::new(UnaryDeadline::new(
            network.unary_deadline(),
            streaming,
        )))
        .add_service(health_service.max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(reflection.max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(reflection_v1alpha.max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(
            PrescriptionServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            DispensingServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            EventServiceServer::new(services.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ManagementIntakeServer::new(services.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServiceServer::new(services).max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    let incoming = tls::incoming_with(
        listener,
        server_tls,
        network.incoming(Arc::clone(&gateway.metrics().tls_handshake_failures)),
    );
    let (stops, stop_requests) = mpsc::unbounded_channel();
    let (close, closed) = oneshot::channel::<()>();
    let steps = drain_steps(&health, &gateway, close);
    let serving = router.serve_with_incoming_shutdown(incoming, async {
        let _ = closed.await;
    });
    let drain = config.drain();
    let data_dir = config.data_dir.clone();
    let task = tokio::spawn(async move {
        let ending = lifecycle::supervise(serving, background, stop_requests, drain, steps).await;
        close_store(gateway, &identity, edge_audit, (opened, data_dir)).await?;
        Ok(ending)
    });
    tracing::info!(%addr, metrics = %metrics_addr, "rxgate listening (gRPC over mutual TLS)");
    Ok(Server {
        addr,
        metrics_addr,
        stops,
        task,
    })
}

/// The drain's steps: NOT_SERVING first, so that balancers and orchestrators hear of it before
/// any connection drains; then GOAWAY, and the end of the event feeds and health watches, which
/// would otherwise hold their connections open until the grace period runs out.
fn drain_steps(
    health: &Arc<Health>,
    gateway: &Arc<Gateway>,
    close: oneshot::Sender<()>,
) -> Steps<impl Future<Output = ()> + use<>, impl Future<Output = ()> + use<>> {
    let (health, watches) = (Arc::clone(health), Arc::clone(health));
    let gateway = Arc::clone(gateway);
    Steps {
        not_serving: async move { health.begin_drain().await },
        close: async move {
            let _ = close.send(());
            gateway.close_feeds();
            watches.end_watches().await;
        },
    }
}

/// Writes what the last calls left (the counted edge requests, and a checkpoint binding their
/// audit records), gives up the relay's lease and the claim on its identity, and writes the
/// acknowledged mark as far as they reach, then closes the store in
/// `data_dir`: a flush, the writer thread joined, the engine's files released. Blocking work,
/// kept off the async runtime.
async fn close_store(
    gateway: Arc<Gateway>,
    identity: &Arc<GatewayIdentity>,
    edge_audit: EdgeAuditLayer,
    (opened, data_dir): (OpenedStore, PathBuf),
) -> anyhow::Result<()> {
    edge_audit.written().await;
    // Another gateway of the fleet relays at once, not only once the lease has run out.
    if let Err(e) = gateway.release_relay_lease().await {
        tracing::warn!(error = %e, "releasing the relay's lease failed");
    }
    checkpoint(&gateway, identity).await;
    // The last audit record is written: the identity's next process may start at once.
    if let Err(e) = gateway.release_identity_claim().await {
        tracing::warn!(error = %e, "giving up the claim on the [gateway] identity failed");
    }
    acknowledged::save(&opened.store(), data_dir, None)
        .await
        .context("saving the acknowledged mark")?;
    drop(gateway);
    opened.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn file_reloads_run_off_the_async_runtime() {
        let runtime_thread = std::thread::current().id();
        let (looked, mut threads) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(every_off_runtime(
            Duration::from_secs(30),
            0u32,
            move |looks: &mut u32| {
                *looks += 1;
                let _ = looked.send((*looks, std::thread::current().id()));
            },
        ));
        for expected in 1..=3 {
            let (looks, thread) = threads.recv().await.unwrap();
            assert_eq!(looks, expected, "the state is carried from look to look");
            assert_ne!(thread, runtime_thread);
        }
        task.abort();
    }
}
