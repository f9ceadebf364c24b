//! The gRPC adapter: the services' handlers (the rest of tonic's use is the TLS edge, the
//! composition root and the command-line clients). Thin service implementations that
//! authenticate the caller from its TLS identity, authorize by institution kind, convert wire
//! messages to domain types, call the use cases and map results and errors back.

mod backup;
mod convert;
mod deadline;
mod decode_errors;
mod edge_audit;
mod fairness;
mod feed;
mod guard;
mod health;
mod lockouts;
mod metered;
mod open_streams;
mod paged;
mod stream_cap;
mod token_bucket;

use std::{pin::Pin, sync::Arc};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        ids::InstitutionKind,
        rx::{DraftFacts, FieldViolation},
    },
    service::{
        Action, Caller, Dispensed, Error, EventFilter, Findings, Gateway, Received, Registered,
        Summary,
    },
    tls::peer_identity,
    wire::documents,
    wire::proto::v1::{
        self as pb, admin_service_server::AdminService,
        dispensing_service_server::DispensingService, event_service_server::EventService,
        management_intake_server::ManagementIntake,
        prescription_service_server::PrescriptionService,
    },
};
use paged::{PagedStream, stream_pages};

use convert::{
    acknowledgements, check_request, finding_to_pb, patient_and_number, patient_key,
    prescription_id, signed_parts, status_to_pb, to_status,
};

fn check_response(findings: Findings) -> pb::CheckResponse {
    let (findings, truncated, omitted) = findings_to_pb(findings);
    pb::CheckResponse {
        findings,
        truncated,
        omitted,
    }
}

/// The findings shown, whether some were left out, and how many.
fn findings_to_pb(findings: Findings) -> (Vec<pb::Finding>, bool, u32) {
    let Findings { shown, omitted } = findings;
    let shown = shown.iter().map(finding_to_pb).collect();
    (shown, omitted > 0, omitted)
}

pub use convert::{MAX_MESSAGE_BYTES, audit_to_pb, file_kind_to_pb, state_to_pb};
pub(crate) use deadline::{UnaryDeadline, streaming_paths};
pub use decode_errors::undecodable_is_invalid_argument;
pub use edge_audit::EdgeAuditLayer;
pub(crate) use fairness::FairnessGuard;
pub use fairness::{Allowance, FairnessPolicy};
pub use feed::{EVENT_POLL, FeedLimits};
pub(crate) use guard::GuardLayer;
pub(crate) use health::Health;
pub use metered::MetricsLayer;
pub(crate) use open_streams::StreamCount;
pub(crate) use stream_cap::StreamCap;

/// tonic answers an oversize request with OUT_OF_RANGE before any handler runs; the contract
/// says RESOURCE_EXHAUSTED (as gRPC itself specifies for exceeded message limits). Such an
/// answer is trailers-only, so its status is in the response headers, where this rewrites it.
pub fn oversize_is_resource_exhausted<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    use tonic::codegen::http::HeaderValue;
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("too large") || m.contains("too%20large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
    response
}

/// The caller of `request`, as its connection's client certificate names it, with the receipt
/// its audit record is said to be submitted through (the edge audit's; a fresh one, for a
/// request that did not come through that layer).
fn authenticated<T>(request: &Request<T>) -> Result<Caller, Status> {
    // Every connection comes through the mutual-TLS acceptor, which refuses anonymous peers.
    let peer =
        peer_identity(request).ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    Ok(Caller {
        institution: peer.institution.clone(),
        certificate_sha256: peer.certificate_sha256,
        receipt: request.extensions().get().cloned().unwrap_or_default(),
    })
}

/// Who may use a service: the kinds of institution, and what a refusal says.
#[derive(Clone, Copy)]
struct Allowed {
    kinds: &'static [InstitutionKind],
    refusal: &'static str,
}

const CLINICS: Allowed = Allowed {
    kinds: &[InstitutionKind::Clinic],
    refusal: "only clinics may use the prescription service",
};
const PHARMACIES: Allowed = Allowed {
    kinds: &[InstitutionKind::Pharmacy],
    refusal: "only pharmacies may use the dispensing service",
};
const MANAGEMENT: Allowed = Allowed {
    kinds: &[InstitutionKind::Management],
    refusal: "only the management service may deliver records",
};
const OPERATORS: Allowed = Allowed {
    kinds: &[InstitutionKind::Operator],
    refusal: "only operators may use the admin service",
};
const FEED_READERS: Allowed = Allowed {
    kinds: &[InstitutionKind::Clinic, InstitutionKind::Management],
    refusal: "only clinics and management read the feed",
};

/// The services over one gateway.
#[derive(Clone)]
pub struct Services {
    gateway: Arc<Gateway>,
    feeds: Arc<feed::Feeds>,
}

impl Services {
    pub fn new(gateway: Arc<Gateway>, feeds: FeedLimits) -> Self {
        Services {
            gateway,
            feeds: Arc::new(feed::Feeds::new(feeds)),
        }
    }

    /// The caller, if its kind may use this service; a refusal is audited.
    async fn caller<T>(
        &self,
        request: &Request<T>,
        allowed: Allowed,
        action: Action,
    ) -> Result<Caller, Status> {
        let caller = authenticated(request)?;
        if !allowed.kinds.contains(&caller.institution.kind) {
            let error = Error::PermissionDenied(allowed.refusal);
            return Err(to_status(
                self.gateway.audit_refusal(&caller, action, error).await,
            ));
        }
        Ok(caller)
    }

    /// The parsed request fields, or their audited refusal.
    async fn parsed<T>(
        &self,
        caller: &Caller,
        action: Action,
        parsed: Result<T, Error>,
    ) -> Result<T, Status> {
        match parsed {
            Ok(value) => Ok(value),
            Err(e) => Err(to_status(
                self.gateway.audit_refusal(caller, action, e).await,
            )),
        }
    }
}

#[tonic::async_trait]
impl PrescriptionService for Services {
    async fn check_prescription(
        &self,
        request: Request<pb::CheckPrescriptionRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        const ACTION: Action = Action::CheckPrescription;
        let caller = self.caller(&request, CLINICS, ACTION).await?;
        let pb::CheckPrescriptionRequest {
            draft,
            consent,
            check_options,
        } = request.into_inner();
        let check = check_request(consent, check_options);
        let max_lines = self.gateway.limits().prescription_lines;
        let parsed = draft
            .as_ref()
            .ok_or_else(|| vec![FieldViolation::new("draft", "is required")])
            .and_then(|d| {
                documents::bounded_count("draft.lines", d.lines.len(), max_lines)?;
                DraftFacts::try_from(d)
            })
            .map_err(Error::InvalidArgument);
        let draft = self.parsed(&caller, ACTION, parsed).await?;
        let findings = self
            .gateway
            .check_prescription(&caller, draft, check)
            .await
            .map_err(to_status)?;
        Ok(Response::new(check_response(findings)))
    }

    async fn register_prescription(
        &self,
        request: Request<pb::RegisterPrescriptionRequest>,
    ) -> Result<Response<pb::RegisterPrescriptionResponse>, Status> {
        const ACTION: Action = Action::RegisterPrescription;
        let caller = self.caller(&request, CLINICS, ACTION).await?;
        let pb::RegisterPrescriptionRequest {
            prescription,
            consent,
            check_options,
            acknowledgements: acks,
        } = request.into_inner();
        let check = check_request(consent, check_options);
        let parsed = signed_parts("prescription", prescription).and_then(|signed| {
            let max = self.gateway.limits().acknowledgements;
            Ok((signed, acknowledgements(acks, max)?))
        });
        let ((content, cms), acks) = self.parsed(&caller, ACTION, parsed).await?;
        let Registered {
            id,
            exchange_number,
            state,
            usable_through,
            findings,
        } = self
            .gateway
            .register(&caller, content, cms, check, acks)
            .await
            .map_err(to_status)?;
        let (findings, findings_truncated, findings_omitted) = findings_to_pb(findings);
        Ok(Response::new(pb::RegisterPrescriptionResponse {
            prescription_id: id,
            exchange_number: format!("{exchange_number:06}"),
            state: state_to_pb(&state) as i32,
            usable_through: usable_through.to_string(),
            findings,
            findings_truncated,
            findings_omitted,
        }))
    }

    async fn cancel_prescription(
        &self,
        request: Request<pb::CancelPrescriptionRequest>,
    ) -> Result<Response<pb::CancelPrescriptionResponse>, Status> {
        const ACTION: Action = Action::CancelPrescription;
        let caller = self.caller(&request, CLINICS, ACTION).await?;
        let pb::CancelPrescriptionRequest {
            prescription_id: id,
        } = request.into_inner();
        let id = self.parsed(&caller, ACTION, prescription_id(&id)).await?;
        let state = self.gateway.cancel(&caller, id).await.map_err(to_status)?;
        Ok(Response::new(pb::CancelPrescriptionResponse {
            state: state_to_pb(&state) as i32,
        }))
    }

    async fn get_prescription_status(
        &self,
        request: Request<pb::GetPrescriptionStatusRequest>,
    ) -> Result<Response<pb::PrescriptionStatus>, Status> {
        const ACTION: Action = Action::GetPrescriptionStatus;
        let caller = self.caller(&request, CLINICS, ACTION).await?;
        let pb::GetPrescriptionStatusRequest {
            prescription_id: id,
        } = request.into_inner();
        let id = self.parsed(&caller, ACTION, prescription_id(&id)).await?;
        let status = self.gateway.status(&caller, id).await.map_err(to_status)?;
        Ok(Response::new(status_to_pb(status)))
    }

    async fn search_prescriptions(
        &self,
        request: Request<pb::SearchPrescriptionsRequest>,
    ) -> Result<Response<pb::SearchPrescriptionsResponse>, Status> {
        const ACTION: Action = Action::SearchPrescriptions;
        let caller = self.caller(&request, CLINICS, ACTION).await?;
        let pb::SearchPrescriptionsRequest {
            patient_key: key,
            issued_from,
            issued_to,
        } = request.into_inner();
        let parsed = patient_key(key.as_ref()).and_then(|key| {
            let from = convert::date("issued_from", &issued_from)?;
            let to = convert::date("issued_to", &issued_to)?;
            Ok((key, from, to))
        });
        let (key, from, to) = self.parsed(&caller, ACTION, parsed).await?;
        let found = self
            .gateway
            .search(&caller, key, from, to)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SearchPrescriptionsResponse {
            prescriptions: found.into_iter().map(status_to_pb).collect(),
        }))
    }
}

#[tonic::async_trait]
impl DispensingService for Services {
    async fn check_dispensing(
        &self,
        request: Request<pb::CheckDispensingRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        const ACTION: Action = Action::CheckDispensing;
        let caller = self.caller(&request, PHARMACIES, ACTION).await?;
        let pb::CheckDispensingRequest {
            prescription_id: id,
            lines,
            consent,
            check_options,
        } = request.into_inner();
        let check = check_request(consent, check_options);
        let max_lines = self.gateway.limits().dispensing_lines;
        let parsed = prescription_id(&id).and_then(|id| {
            let lines = documents::bounded_count("lines", lines.len(), max_lines)
                .and_then(|()| documents::lines_to_dispense(&lines))
                .map_err(Error::InvalidArgument)?;
            Ok((id, lines))
        });
        let (id, lines) = self.parsed(&caller, ACTION, parsed).await?;
        let findings = self
            .gateway
            .check_dispensing(&caller, id, lines, check)
            .await
            .map_err(to_status)?;
        Ok(Response::new(check_response(findings)))
    }

    async fn lookup_prescription(
        &self,
        request: Request<pb::LookupPrescriptionRequest>,
    ) -> Result<Response<pb::PrescriptionSummary>, Status> {
        const ACTION: Action = Action::LookupPrescription;
        let caller = self.caller(&request, PHARMACIES, ACTION).await?;
        let pb::LookupPrescriptionRequest {
            patient_key,
            exchange_number,
        } = request.into_inner();
        let parsed = patient_and_number(patient_key.as_ref(), &exchange_number);
        let (key, number) = self.parsed(&caller, ACTION, parsed).await?;
        let Summary {
            id,
            state,
            issue_date,
            usable_through,
            institution,
            line_count,
        } = self
            .gateway
            .lookup(&caller, key, number)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PrescriptionSummary {
            prescription_id: id,
            state: state_to_pb(&state) as i32,
            issue_date,
            usable_through,
            institution_code: institution,
            line_count,
        }))
    }

    async fn receive_prescription(
        &self,
        request: Request<pb::ReceivePrescriptionRequest>,
    ) -> Result<Response<pb::ReceivePrescriptionResponse>, Status> {
        const ACTION: Action = Action::ReceivePrescription;
        let caller = self.caller(&request, PHARMACIES, ACTION).await?;
        let pb::ReceivePrescriptionRequest {
            patient_key,
            exchange_number,
            consent,
            check_options,
        } = request.into_inner();
        let parsed = patient_and_number(patient_key.as_ref(), &exchange_number);
        let (key, number) = self.parsed(&caller, ACTION, parsed).await?;
        let check = check_request(consent, check_options);
        let Received {
            id,
            state,
            content,
            cms_signature,
            findings,
        } = self
            .gateway
            .receive(&caller, key, number, check)
            .await
            .map_err(to_status)?;
        let (findings, findings_truncated, findings_omitted) = findings_to_pb(findings);
        Ok(Response::new(pb::ReceivePrescriptionResponse {
            prescription_id: id,
            state: state_to_pb(&state) as i32,
            prescription: Some(pb::SignedDocument {
                content,
                cms_signature,
            }),
            findings,
            findings_truncated,
            findings_omitted,
        }))
    }

    async fn return_prescription(
        &self,
        request: Request<pb::ReturnPrescriptionRequest>,
    ) -> Result<Response<pb::ReturnPrescriptionResponse>, Status> {
        const ACTION: Action = Action::ReturnPrescription;
        let caller = self.caller(&request, PHARMACIES, ACTION).await?;
        let pb::ReturnPrescriptionRequest {
            prescription_id: id,
        } = request.into_inner();
        let id = self.parsed(&caller, ACTION, prescription_id(&id)).await?;
        let state = self
            .gateway
            .give_back(&caller, id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ReturnPrescriptionResponse {
            state: state_to_pb(&state) as i32,
        }))
    }

    async fn record_dispensing(
        &self,
        request: Request<pb::RecordDispensingRequest>,
    ) -> Result<Response<pb::RecordDispensingResponse>, Status> {
        const ACTION: Action = Action::RecordDispensing;
        let caller = self.caller(&request, PHARMACIES, ACTION).await?;
        let pb::RecordDispensingRequest { dispensing_record } = request.into_inner();
        let signed = signed_parts("dispensing_record", dispensing_record);
        let (content, cms) = self.parsed(&caller, ACTION, signed).await?;
        let Dispensed {
            prescription_id,
            state,
            record_number,
        } = self
            .gateway
            .dispense(&caller, content, cms)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RecordDispensingResponse {
            prescription_id,
            state: state_to_pb(&state) as i32,
            record_number,
        }))
    }
}

#[tonic::async_trait]
impl ManagementIntake for Services {
    async fn deliver_dispensing_record(
        &self,
        request: Request<pb::DeliverDispensingRecordRequest>,
    ) -> Result<Response<pb::DeliverDispensingRecordResponse>, Status> {
        const ACTION: Action = Action::DeliverDispensingRecord;
        let caller = self.caller(&request, MANAGEMENT, ACTION).await?;
        let delivery = convert::delivery(request.into_inner());
        let delivery = self.parsed(&caller, ACTION, delivery).await?;
        let duplicate = self
            .gateway
            .intake(&caller, delivery)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeliverDispensingRecordResponse {
            duplicate,
        }))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Services {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        const ACTION: Action = Action::WatchEvents;
        let caller = self.caller(&request, FEED_READERS, ACTION).await?;
        // A clinic reads its own prescriptions' events, the management service all.
        let institution = (caller.institution.kind == InstitutionKind::Clinic)
            .then(|| caller.institution.code.clone());
        // Claimed first, so that a flood of feeds is refused before it reads anything.
        let slot = match self.feeds.claim(&caller.institution) {
            Ok(slot) => slot,
            Err(status) => {
                let error = Error::ResourceExhausted("the institution's open WatchEvents streams");
                self.gateway.audit_refusal(&caller, ACTION, error).await;
                return Err(status);
            }
        };
        let pb::WatchEventsRequest {
            after_sequence,
            filter,
        } = request.into_inner();
        let (prescription_id, kinds) = self
            .parsed(&caller, ACTION, convert::event_filter(filter))
            .await?;
        let filter = EventFilter {
            institution,
            prescription_id,
            kinds,
        };
        // The first page is read before answering, so that OUT_OF_RANGE is the call's status.
        let limits = self.feeds.limits();
        let events = match self
            .gateway
            .watch(filter, after_sequence, limits.pace())
            .await
        {
            Ok(events) => events,
            Err(e) => {
                return Err(to_status(
                    self.gateway.audit_refusal(&caller, ACTION, e).await,
                ));
            }
        };
        self.gateway
            .audit_access(&caller, ACTION)
            .await
            .map_err(to_status)?;
        Ok(Response::new(feed::start(events, limits, slot)))
    }
}

#[tonic::async_trait]
impl AdminService for Services {
    type ExportAuditStream = PagedStream<pb::AuditRecord>;
    type ExportAuditCheckpointsStream = PagedStream<pb::AuditCheckpoint>;
    type BackupStream = PagedStream<pb::BackupChunk>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<PagedStream<pb::BackupChunk>>, Status> {
        const ACTION: Action = Action::Backup;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let pb::BackupRequest {} = request.into_inner();
        let stall = self.feeds.limits().stall;
        let chunks = (self.gateway.backup(&caller, stall).await).map_err(to_status)?;
        Ok(Response::new(backup::stream(chunks)))
    }

    async fn list_stuck_prescriptions(
        &self,
        request: Request<pb::ListStuckPrescriptionsRequest>,
    ) -> Result<Response<pb::ListStuckPrescriptionsResponse>, Status> {
        const ACTION: Action = Action::ListStuckPrescriptions;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let pb::ListStuckPrescriptionsRequest { stuck_after_secs } = request.into_inner();
        let after = match stuck_after_secs {
            0 => self.gateway.stuck_after(),
            secs @ 1..=convert::MAX_STUCK_AFTER_SECS => std::time::Duration::from_secs(secs),
            _ => {
                let e = Error::InvalidArgument(vec![FieldViolation::new(
                    "stuck_after_secs",
                    "0 (the configured threshold) to 366 days",
                )]);
                return Err(to_status(
                    self.gateway.audit_refusal(&caller, ACTION, e).await,
                ));
            }
        };
        self.gateway
            .audit_access(&caller, ACTION)
            .await
            .map_err(to_status)?;
        let stuck = self.gateway.stuck(after).await.map_err(to_status)?;
        Ok(Response::new(pb::ListStuckPrescriptionsResponse {
            prescriptions: stuck.into_iter().map(convert::stuck_to_pb).collect(),
        }))
    }

    async fn list_lockouts(
        &self,
        request: Request<pb::ListLockoutsRequest>,
    ) -> Result<Response<pb::ListLockoutsResponse>, Status> {
        const ACTION: Action = Action::ListLockouts;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let pb::ListLockoutsRequest {} = request.into_inner();
        let (locked, truncated) = self.gateway.lockouts(&caller).await.map_err(to_status)?;
        Ok(Response::new(pb::ListLockoutsResponse {
            lockouts: locked.into_iter().map(lockouts::lockout_to_pb).collect(),
            truncated,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        const ACTION: Action = Action::Unlock;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let pb::UnlockRequest { subject } = request.into_inner();
        let parsed = lockouts::subject(subject);
        let subject = self.parsed(&caller, ACTION, parsed).await?;
        self.gateway
            .unlock(&caller, subject)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UnlockResponse {}))
    }

    async fn confirm_clock(
        &self,
        request: Request<pb::ConfirmClockRequest>,
    ) -> Result<Response<pb::ConfirmClockResponse>, Status> {
        const ACTION: Action = Action::ConfirmClock;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let pb::ConfirmClockRequest {} = request.into_inner();
        let confirmed = self
            .gateway
            .confirm_clock(&caller)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::clock_confirmed_to_pb(confirmed)))
    }

    async fn import_master(
        &self,
        request: Request<tonic::Streaming<pb::ImportMasterChunk>>,
    ) -> Result<Response<pb::ImportMasterSummary>, Status> {
        const ACTION: Action = Action::ImportMaster;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let files = convert::import_files(request.into_inner()).await;
        let files = self.parsed(&caller, ACTION, files).await?;
        let summary = self
            .gateway
            .import_master(&caller, files)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::import_summary_to_pb(summary)))
    }

    async fn export_audit(
        &self,
        request: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<PagedStream<pb::AuditRecord>>, Status> {
        const ACTION: Action = Action::ExportAudit;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let pb::ExportAuditRequest {
            from_unix_ms: from,
            to_unix_ms,
            patient_pseudonym,
        } = request.into_inner();
        let patient = self
            .parsed(
                &caller,
                ACTION,
                convert::pseudonym_filter(&patient_pseudonym),
            )
            .await?;
        let to = if to_unix_ms == 0 {
            i64::MAX
        } else {
            to_unix_ms
        };
        // The export itself is audited before it starts.
        self.gateway
            .audit_access(&caller, ACTION)
            .await
            .map_err(to_status)?;
        Ok(Response::new(stream_pages(
            &self.gateway,
            move |gateway, after| async move {
                let (entries, next) = gateway.audit_page((from, to), after, 500, patient).await?;
                Ok((
                    entries.into_iter().map(convert::audit_to_pb).collect(),
                    next,
                ))
            },
        )))
    }

    async fn export_audit_checkpoints(
        &self,
        request: Request<pb::ExportAuditCheckpointsRequest>,
    ) -> Result<Response<PagedStream<pb::AuditCheckpoint>>, Status> {
        const ACTION: Action = Action::ExportAuditCheckpoints;
        let caller = self.caller(&request, OPERATORS, ACTION).await?;
        let pb::ExportAuditCheckpointsRequest {} = request.into_inner();
        self.gateway
            .audit_access(&caller, ACTION)
            .await
            .map_err(to_status)?;
        let signed = |signed| pb::AuditCheckpoint { signed };
        Ok(Response::new(stream_pages(
            &self.gateway,
            move |gateway, after| async move {
                let (stored, next) = gateway.audit_checkpoints(after, 500).await?;
                Ok((stored.into_iter().map(signed).collect(), next))
            },
        )))
    }
}
