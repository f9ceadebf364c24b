//! `rxgate admin lockouts` and `rxgate admin unlock`: the operator's way out of an
//! exchange-number lockout, through a running gateway's AdminService (so each call is audited
//! under the operator's certificate), and what it prints.

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

/// One line per lockout: whom it holds, its misses, until when (Unix milliseconds).
fn render(lockouts: &[pb::Lockout]) -> String {
    if lockouts.is_empty() {
        return "no lockout in force\n".into();
    }
    lockouts
        .iter()
        .map(|l| {
            let whom = match l.subject.as_ref().and_then(|s| s.subject.as_ref()) {
                Some(Subject::PharmacyCode(code)) => format!("pharmacy {code}"),
                Some(Subject::PatientPseudonym(pseudonym)) => format!("patient {pseudonym}"),
                None => "unknown".into(),
            };
            format!(
                "{whom}  misses {}  locked until {} (unix ms)\n",
                l.misses, l.locked_until_unix_ms
            )
        })
        .collect()
}
