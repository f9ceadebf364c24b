//! After the run: every registration the server acknowledged must read back from it
//! (GetPrescriptionStatus by the registering clinic: same prescription number, and DISPENSED when
//! its dispensing record was acknowledged too). Anything else counts as lost.

use rxgate::wire::proto::v1::{self as pb, prescription_service_client::PrescriptionServiceClient};

use crate::{fleet::Fleet, pool, report::Audit, workload::Acked};

pub async fn read_back(fleet: &Fleet, acked: Vec<Acked>) -> anyhow::Result<Audit> {
    let acknowledged = acked.len() as u64;
    // Registrations go to the clinics in turn.
    let concurrency = pool::PER_INSTITUTION * fleet.clinics.len().max(1);
    let found = pool::run_bounded(acked, concurrency, |a| {
        let channel = fleet.clinics[a.clinic].channel();
        async move {
            let clinic = PrescriptionServiceClient::new(channel);
            let request = pb::GetPrescriptionStatusRequest {
                prescription_id: a.prescription_id.clone(),
            };
            let status = pool::paced(|| {
                let (mut clinic, request) = (clinic.clone(), request.clone());
                async move { clinic.get_prescription_status(request).await }
            })
            .await;
            Ok(matches!(status, Ok(s) if intact(&a, s.get_ref())))
        }
    })
    .await?;
    Ok(Audit {
        acknowledged,
        lost: found.iter().filter(|&&ok| !ok).count() as u64,
    })
}

fn intact(acked: &Acked, status: &pb::PrescriptionStatus) -> bool {
    status.prescription_number == acked.number
        && (!acked.dispensed || status.state == pb::PrescriptionState::Dispensed as i32)
}
