//! The relay: when an upstream management service is configured, a background task pushes every
//! dispensing record (the signed document and its metadata) to the upstream's ManagementIntake
//! over mutual TLS, in event order, one at a time. A record is acknowledged — the position in the
//! event log moves past it, durably — only after the upstream took it; the upstream de-duplicates
//! by record id, so a record re-sent after a crash has its effect once. Transient failures are
//! retried with exponential backoff; a record the upstream refuses for good (INVALID_ARGUMENT,
//! FAILED_PRECONDITION) goes to the dead-letter list with an error-level alert, and the relay
//! moves on.
//!
//! Of several gateways over one database, one relays at a time: the holder of the relay's lease
//! (`service::lease`), which a task beside the relay takes and renews every third of its term.
//! The others wait, trying every third of a term, and take it over once the holder stops
//! renewing (it died) or releases it (it stopped). A relay that finds it lost the lease stops
//! and waits; its acknowledgements are refused from then on, so the position is only ever moved
//! by the holder, and whatever it delivered meanwhile the upstream takes once.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use prost::Message;
use tokio::sync::watch;
use tonic::{Code, transport::Channel};

use crate::{
    domain::hash::{hex, sha256},
    pki::identity::{GatewayIdentity, RELAY_STATEMENT},
    service::{DeadLetter, EventEntry, EventFilter, EventKind, Gateway},
    tls::ClientFiles,
    wire::proto::v1::{self as pb, management_intake_client::ManagementIntakeClient},
};

mod lease;

/// Where and as whom to relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// e.g. `https://management.example:50051`.
    pub upstream: String,
    /// This gateway's client identity (an institution certificate of kind management) and the
    /// upstream's CA.
    pub client: ClientFiles,
    pub max_backoff: Duration,
    /// The gateway's signing identity, which attests each record's receipt time.
    pub identity: Arc<GatewayIdentity>,
    /// The term of the relay's lease.
    pub lease: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const PAGE: usize = 100;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream refused the record for good: retrying cannot help.
fn is_permanent(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::FailedPrecondition)
}

/// The delivery of a dispensing-record event, its metadata attested with the gateway's key.
fn delivery(
    e: &EventEntry,
    identity: &GatewayIdentity,
) -> Option<pb::DeliverDispensingRecordRequest> {
    let record = e.record.as_ref()?;
    let statement = pb::RelayStatement {
        record_id: hex(&sha256(&record.content)),
        received_unix_ms: record.received_at_ms,
        prescription_id: e.event.prescription_id.clone(),
        institution_code: e.event.institution.clone(),
        prescription_number: e.event.number.clone(),
    };
    let encoded = statement.encode_to_vec();
    // Signing fails only if the system's random source does: the record then goes unattested
    // and the upstream judges it as of its arrival.
    let attestation = identity
        .sign(RELAY_STATEMENT, &encoded)
        .inspect_err(|_| tracing::error!("relay: signing the attestation failed"))
        .ok()
        .map(|signature| pb::RelayAttestation {
            statement: encoded,
            signature,
            sender_certificate_sha256: identity.fingerprint().to_vec(),
        });
    Some(pb::DeliverDispensingRecordRequest {
        record_id: statement.record_id,
        sequence: e.sequence,
        dispensing_record: Some(pb::SignedDocument {
            content: record.content.clone(),
            cms_signature: record.cms_signature.clone(),
        }),
        received_unix_ms: statement.received_unix_ms,
        prescription_id: statement.prescription_id,
        institution_code: statement.institution_code,
        prescription_number: statement.prescription_number,
        attestation,
    })
}

/// How a delivery ended.
enum Outcome {
    /// The upstream took the record, or refused it for good (its dead letter): it is done.
    Done(Option<DeadLetter>),
    /// The lease went to another gateway before the upstream took it.
    LeaseLost,
}

struct Relay {
    gateway: Arc<Gateway>,
    config: RelayConfig,
    client: Option<ManagementIntakeClient<Channel>>,
    backoff: Duration,
    /// Whether this gateway holds the relay's lease, as the lease's keeper last found.
    held: watch::Receiver<bool>,
}

impl Relay {
    fn set_up(&self, up: bool) {
        self.gateway
            .metrics()
            .relay_up
            .store(u64::from(up), Ordering::Relaxed);
    }

    /// Reads the acknowledged position and sets the position and lag metrics from it: at each
    /// page, and at each wait of a delivery that does not get through, so that the lag grows
    /// with the backlog while the upstream is down.
    async fn note_position(&self) -> Result<u64, crate::service::Error> {
        let position = self.gateway.relay_position().await?;
        let metrics = self.gateway.metrics();
        metrics.relay_acked.store(position, Ordering::Relaxed);
        if let Ok(latest) = self.gateway.latest_event().await {
            metrics
                .relay_lag
                .store(latest.saturating_sub(position), Ordering::Relaxed);
        }
        Ok(position)
    }

    /// Waits before the next attempt, doubling the wait up to the configured maximum; cut short
    /// when the lease goes.
    async fn back_off(&mut self) {
        let _ = self.note_position().await;
        let mut held = self.held.clone();
        tokio::select! {
            () = tokio::time::sleep(self.backoff) => {}
            _ = held.wait_for(|held| !held) => {}
        }
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
    }

    /// Delivers one record until the upstream takes it or refuses it for good, or the lease
    /// goes.
    async fn deliver(&mut self, entry: &EventEntry) -> Outcome {
        let Some(request) = delivery(entry, &self.config.identity) else {
            return Outcome::Done(None);
        };
        loop {
            if !*self.held.borrow() {
                return Outcome::LeaseLost;
            }
            if self.client.is_none() {
                match self.config.client.connect(&self.config.upstream).await {
                    Ok(channel) => self.client = Some(ManagementIntakeClient::new(channel)),
                    Err(e) => {
                        self.set_up(false);
                        tracing::warn!(error = %e, backoff_ms = self.backoff.as_millis() as u64, "relay: upstream unreachable");
                        self.back_off().await;
                        continue;
                    }
                }
            }
            let Some(client) = self.client.as_mut() else {
                continue;
            };
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(CALL_TIMEOUT);
            match client.deliver_dispensing_record(call).await {
                Ok(_) => {
                    self.set_up(true);
                    self.backoff = MIN_BACKOFF;
                    return Outcome::Done(None);
                }
                Err(status) if is_permanent(status.code()) => {
                    self.set_up(true);
                    tracing::error!(
                        sequence = entry.sequence,
                        prescription = %entry.event.prescription_id,
                        code = ?status.code(),
                        "ALERT relay: the upstream refused a dispensing record for good; it is dead-lettered"
                    );
                    self.gateway
                        .metrics()
                        .relay_dead_letters
                        .fetch_add(1, Ordering::Relaxed);
                    return Outcome::Done(Some(DeadLetter {
                        sequence: entry.sequence,
                        prescription_id: entry.event.prescription_id.clone(),
                        record_number: entry.event.record_number.unwrap_or(0),
                        code: format!("{:?}", status.code()),
                        message: status.message().to_owned(),
                    }));
                }
                Err(status) => {
                    self.set_up(false);
                    tracing::warn!(code = ?status.code(), backoff_ms = self.backoff.as_millis() as u64, "relay: delivery failed; retrying");
                    if status.code() == Code::Unavailable {
                        self.client = None;
                    }
                    self.back_off().await;
                }
            }
        }
    }

    async fn run(mut self) {
        let filter = EventFilter {
            institution: None,
            prescription_id: None,
            kinds: vec![EventKind::DispensingRecorded],
        };
        let gateway = Arc::clone(&self.gateway);
        loop {
            if self.held.wait_for(|held| *held).await.is_err() {
                return; // The lease's keeper is gone: the task is ending.
            }
            let notify = gateway.events_notifier();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let page = match self.note_position().await {
                Ok(position) => {
                    self.gateway
                        .events_page(filter.clone(), position, PAGE)
                        .await
                }
                Err(e) => Err(e),
            };
            let (entries, last) = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "relay: reading the event log failed");
                    self.back_off().await;
                    continue;
                }
            };
            if !self.relay_page(&entries, last).await {
                tracing::info!("relay: the lease went to another gateway; waiting");
                // Until the keeper has looked again.
                tokio::time::sleep(self.config.lease / 3).await;
                continue;
            }
            if last.is_none() {
                let mut held = self.held.clone();
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = held.wait_for(|held| !held) => {}
                }
            }
        }
    }

    /// Delivers and acknowledges `entries`, then acknowledges the position past `last`, the
    /// events that are not dispensing records included; false once the lease is found lost.
    async fn relay_page(&mut self, entries: &[EventEntry], last: Option<u64>) -> bool {
        for entry in entries {
            let Outcome::Done(dead) = self.deliver(entry).await else {
                return false;
            };
            if !self.ack(entry.sequence, dead).await {
                return false;
            }
        }
        match last {
            Some(last) => self.ack(last, None).await,
            None => true,
        }
    }

    /// Records the acknowledgement of `sequence`; false if the lease was lost. A failure to
    /// record it is logged and passed over: the record is delivered again later, and the
    /// upstream takes it once.
    async fn ack(&self, sequence: u64, dead: Option<DeadLetter>) -> bool {
        match self.gateway.relay_ack(sequence, dead).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "relay: recording the acknowledgement failed");
                true
            }
        }
    }
}

/// Runs the relay, and beside it the keeper of its lease, until the task is aborted.
pub async fn run(gateway: Arc<Gateway>, config: RelayConfig) {
    tracing::info!(upstream = %config.upstream, "relay started");
    let (held, holding) = watch::channel(false);
    let keeper = lease::keep(Arc::clone(&gateway), config.lease, held);
    let relay = Relay {
        gateway,
        config,
        client: None,
        backoff: MIN_BACKOFF,
        held: holding,
    };
    tokio::join!(keeper, relay.run());
}
