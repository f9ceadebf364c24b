//! `rxgate admin stuck`, `rxgate admin lockouts`, `rxgate admin unlock` and `rxgate admin
//! confirm-clock`: the prescriptions stuck at a pharmacy, the operator's way out of an
//! exchange-number lockout, and the confirmation of a stepped wall clock that lets the expiry
//! sweep act again, through a running gateway's AdminService (so each call is audited under the
//! operator's certificate), and what they print.

use anyhow::Context;

use crate::{
    tls::ClientFiles,
    wire::proto::v1::{
        self as pb, admin_service_client::AdminServiceClient, lockout_subject::Subject,
    },
};

async fn client(
    addr: &str,
    operator: &ClientFiles,
) -> anyhow::Result<AdminServiceClient<tonic::transport::Channel>> {
    let channel = operator
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(AdminServiceClient::new(channel))
}

fn refused(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what} refused: {:?}: {}", status.code(), status.message())
}

/// The prescriptions stuck at the gateway at `addr` (past its `stuck_after_secs`), one line
/// each.
pub async fn stuck(addr: &str, operator: &ClientFiles) -> anyhow::Result<String> {
    let answer = client(addr, operator)
        .await?
        .list_stuck_prescriptions(pb::ListStuckPrescriptionsRequest {
            stuck_after_secs: 0,
        })
        .await
        .map_err(|s| refused("listing", s))?;
    Ok(render_stuck(&answer.into_inner().prescriptions))
}

/// One line per stuck prescription: its id and number, the clinic, the pharmacy that accepted
/// it, when (Unix milliseconds), and its dispensing records since.
fn render_stuck(stuck: &[pb::StuckPrescription]) -> String {
    lines(stuck, "no prescription is stuck", |s| {
        format!(
            "{}  {} of clinic {}  pharmacy {}  accepted {} (unix ms)  records {}  last {} \
             (unix ms)",
            s.prescription_id,
            s.prescription_number,
            s.institution_code,
            s.pharmacy_code,
            s.accepted_unix_ms,
            s.records,
            s.last_record_unix_ms
        )
    })
}

/// One line per item, or `none` alone when there is none.
fn lines<T>(items: &[T], none: &str, line: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        return format!("{none}\n");
    }
    items.iter().map(|item| line(item) + "\n").collect()
}

/// The lockouts in force at the gateway at `addr`, one line each.
pub async fn lockouts(addr: &str, operator: &ClientFiles) -> anyhow::Result<String> {
    let answer = client(addr, operator)
        .await?
        .list_lockouts(pb::ListLockoutsRequest {})
        .await
        .map_err(|s| refused("listing", s))?;
    let answer = answer.into_inner();
    let more = if answer.truncated {
        "… and more lockouts than listed are in force\n"
    } else {
        ""
    };
    Ok(render(&answer.lockouts) + more)
}

/// Lifts the lockout of `subject` at the gateway at `addr`.
pub async fn unlock(addr: &str, operator: &ClientFiles, subject: Subject) -> anyhow::Result<()> {
    client(addr, operator)
        .await?
        .unlock(pb::UnlockRequest {
            subject: Some(pb::LockoutSubject {
                subject: Some(subject),
            }),
        })
        .await
        .map_err(|s| refused("unlock", s))?;
    Ok(())
}

/// Confirms the wall clock of the gateway at `addr` as it reads now; says what was confirmed.
pub async fn confirm_clock(addr: &str, operator: &ClientFiles) -> anyhow::Result<String> {
    let pb::ConfirmClockResponse {
        wall_clock_unix_ms,
        step_secs,
    } = client(addr, operator)
        .await?
        .confirm_clock(pb::ConfirmClockRequest {})
        .await
        .map_err(|s| refused("confirming the clock", s))?
        .into_inner();
    Ok(format!(
        "clock confirmed at {wall_clock_unix_ms} (unix ms), {step_secs} s ahead of the steady \
         clock since the last expiry sweep\n"
    ))
}

/// One line per lockout: whom it holds, its misses, until when (Unix milliseconds).
fn render(lockouts: &[pb::Lockout]) -> String {
    lines(lockouts, "no lockout in force", |l| {
        let whom = match l.subject.as_ref().and_then(|s| s.subject.as_ref()) {
            Some(Subject::PharmacyCode(code)) => format!("pharmacy {code}"),
            Some(Subject::PatientPseudonym(pseudonym)) => format!("patient {pseudonym}"),
            None => "unknown".into(),
        };
        format!(
            "{whom}  misses {}  locked until {} (unix ms)",
            l.misses, l.locked_until_unix_ms
        )
    })
}
