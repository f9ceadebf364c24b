//! Several gateways over one PostgreSQL database, as behind a load balancer: every promise one
//! gateway makes must hold across them. Exactly one pharmacy wins a receive, the same content
//! registered through two gateways at once makes one prescription, a check reads the history
//! its registration is decided on (two contraindicated registrations at once: one is refused),
//! consumers of the feed on different gateways see every event once and in the documented
//! order, and the lookup lockout counts misses sent through any gateway. Skipped, saying so,
//! when PostgreSQL is not installed, except under CI.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use prost::Message;
use rxgate::{app, cli::demo::demo_prescription, service::IDENTITY_TERM, wire::proto::v1 as pb};
use tonic::Code;

use crate::common::{
    Harness, fixtures::prescription, fleet, institution_code, patient, throttled, whole_feed,
};
use crate::{events::take, gateway::winners};

/// Registers the demo prescription `number` of patient `n` through `h`, signed once by the dev
/// doctor: the request, so that a test can send the same content again.
fn registration(h: &Harness, number: &str, n: u32) -> pb::RegisterPrescriptionRequest {
    let rx = demo_prescription(number, patient(n), h.today());
    pb::RegisterPrescriptionRequest {
        prescription: Some(h.sign("doctor", rx.encode_to_vec())),
        ..Default::default()
    }
}

/// `request` sent as the dev clinic `clinic` through `h`, again while the gateway asks to wait.
async fn register_through(
    h: &Harness,
    clinic: &str,
    request: pb::RegisterPrescriptionRequest,
) -> Result<pb::RegisterPrescriptionResponse, tonic::Status> {
    let clinic = h.clinic(clinic).await;
    throttled(|| {
        let (mut clinic, request) = (clinic.clone(), request.clone());
        async move { clinic.register_prescription(request).await }
    })
    .await
    .map(|r| r.into_inner())
}

/// The feed from the start, as the dev management service watches it through `h`.
async fn watch(h: &Harness) -> tonic::Streaming<pb::Event> {
    whole_feed(h.channel("management").await).await
}

fn receive(n: u32, exchange: &str) -> pb::ReceivePrescriptionRequest {
    pb::ReceivePrescriptionRequest {
        patient_key: Some(patient(n)),
        exchange_number: exchange.into(),
        ..Default::default()
    }
}

/// Rounds of the race, and the pharmacies racing in each (spread over the gateways).
const ROUNDS: u32 = 200;
const RACERS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_pharmacy_wins_across_three_gateways() {
    let Some(fleet) = fleet::start(3, |_| {}).await else {
        return;
    };
    let mut pharmacies = Vec::new();
    for i in 0..RACERS {
        let through = &fleet[i % fleet.len()];
        pharmacies.push(
            through
                .pharmacy(&format!("race-pharmacy-{:02}", i + 1))
                .await,
        );
    }
    let mut clinics = Vec::new();
    for h in &fleet {
        clinics.push(h.clinic("clinic").await);
    }
    for round in 0..ROUNDS {
        let n = 5000 + round;
        let h = &fleet[round as usize % fleet.len()];
        let request = registration(h, &format!("FLEET-RACE-{round}"), n);
        let registered = register_through(h, "clinic", request).await.unwrap();
        let exchange = registered.exchange_number;
        let tasks: Vec<_> = pharmacies
            .iter()
            .cloned()
            .map(|mut p| {
                let request = receive(n, &exchange);
                tokio::spawn(async move { p.receive_prescription(request).await })
            })
            .collect();
        let won = winners(tasks).await;
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        // Held by the winner, as another gateway reads it.
        let status = pb::GetPrescriptionStatusRequest {
            prescription_id: registered.prescription_id,
        };
        let mut clinic = clinics[(round as usize + 1) % fleet.len()].clone();
        let held = clinic.get_prescription_status(status).await.unwrap();
        let winner = format!("race-pharmacy-{:02}", won[0] + 1);
        let pharmacy_code = held.into_inner().pharmacy_code;
        assert_eq!(pharmacy_code, institution_code(&winner), "round {round}");
    }
    // Each gateway shows its own connections to the database, and the runs made again.
    for h in &fleet {
        let value = |line: String| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
        let open = value(h.metrics_line("rxgate_store_pool_connections ").await);
        assert!(open >= 1, "{open} connections");
        let idle = value(h.metrics_line("rxgate_store_pool_idle ").await);
        assert!(idle <= open, "{idle} idle of {open}");
        value(h.metrics_line("rxgate_store_retries_total ").await);
    }
    for h in fleet {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_content_through_two_gateways_at_once_is_one_prescription() {
    let Some(fleet) = fleet::start(2, |_| {}).await else {
        return;
    };
    let fleet = Arc::new(fleet);
    for round in 0..20 {
        let request = registration(&fleet[0], &format!("FLEET-SAME-{round}"), 6000 + round);
        let sent: Vec<_> = (0..2)
            .map(|g| {
                let (fleet, request) = (Arc::clone(&fleet), request.clone());
                tokio::spawn(async move { register_through(&fleet[g], "clinic", request).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in sent {
            let r = task.await.unwrap().unwrap();
            answers.push((r.prescription_id, r.exchange_number));
        }
        assert_eq!(answers[0], answers[1], "round {round}");
    }
    // Each registration is stored once: the feed holds one Registered event per round, then
    // that of a registration made after them all.
    let last = registration(&fleet[1], "FLEET-SAME-LAST", 6100);
    register_through(&fleet[1], "clinic", last).await.unwrap();
    let events = take(&mut watch(&fleet[1]).await, 21).await;
    let numbers: Vec<&str> = events
        .iter()
        .map(|e| e.prescription_number.as_str())
        .collect();
    let distinct: BTreeSet<&str> = numbers[..20].iter().copied().collect();
    assert_eq!(distinct.len(), 20, "{numbers:?}");
    assert_eq!(numbers[20], "FLEET-SAME-LAST", "{numbers:?}");
    for h in Arc::into_inner(fleet).unwrap() {
        h.shutdown().await;
    }
}

const CLINICS: [(&str, &str); 2] = [("clinic", "1310000001"), ("clinic2", "1310000002")];
const TRIAZOLAM: &str = "611120055";
const ITRACONAZOLE: &str = "616290177"; // contraindicated with triazolam

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_contraindicated_registrations_at_once_through_two_gateways_one_is_refused() {
    let Some(fleet) = fleet::start(2, |_| {}).await else {
        return;
    };
    let fleet = Arc::new(fleet);
    for round in 0..20 {
        let n = 7000 + round;
        let sent: Vec<_> = [TRIAZOLAM, ITRACONAZOLE]
            .into_iter()
            .enumerate()
            .map(|(g, drug)| {
                let fleet = Arc::clone(&fleet);
                let h = &fleet[g];
                // Two clinics: a contraindication with another institution's drug is checked
                // whatever the options.
                let (clinic, code) = CLINICS[g];
                let rx = prescription(h, code, &format!("FLEET-CI-{round}-{g}"), n, &[drug]);
                let request = pb::RegisterPrescriptionRequest {
                    prescription: Some(h.sign("doctor", rx.encode_to_vec())),
                    consent: pb::Consent::Card as i32,
                    ..Default::default()
                };
                tokio::spawn(async move { register_through(&fleet[g], clinic, request).await })
            })
            .collect();
        let mut refused = 0;
        for task in sent {
            if let Err(s) = task.await.unwrap() {
                assert_eq!(s.code(), Code::FailedPrecondition, "round {round}: {s:?}");
                refused += 1;
            }
        }
        assert_eq!(
            refused, 1,
            "round {round}: each read a history without the other"
        );
    }
    for h in Arc::into_inner(fleet).unwrap() {
        h.shutdown().await;
    }
}

/// Prescriptions each of three gateways registers at once, and how many of them it dispenses.
const WRITTEN: u32 = 12;
const DISPENSED: u32 = 4;

/// Through `h`, registers [`WRITTEN`] prescriptions of patients from `first` at once, then
/// receives and dispenses the first [`DISPENSED`]: their numbers, dispensed first.
async fn write_through(h: Arc<Harness>, prefix: &str, first: u32) -> Vec<String> {
    let registering: Vec<_> = (0..WRITTEN)
        .map(|i| {
            let h = Arc::clone(&h);
            let number = format!("{prefix}-{i}");
            tokio::spawn(async move {
                let request = registration(&h, &number, first + i);
                let r = register_through(&h, "clinic", request).await.unwrap();
                (number, first + i, r.exchange_number)
            })
        })
        .collect();
    let mut registered = Vec::new();
    for task in registering {
        registered.push(task.await.unwrap());
    }
    for (number, n, exchange) in &registered[..DISPENSED as usize] {
        h.receive_and_dispense_demo(number, *n, exchange).await;
    }
    registered.into_iter().map(|(number, ..)| number).collect()
}

/// What a consumer saw: each event's (sequence, prescription number, kind), in feed order.
type Seen = Vec<(u64, String, pb::EventKind)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_on_two_gateways_see_every_event_of_three_writers_once_in_order() {
    let Some(fleet) = fleet::start(3, |_| {}).await else {
        return;
    };
    let fleet: Vec<Arc<Harness>> = fleet.into_iter().map(Arc::new).collect();
    let expected = (3 * (WRITTEN + 2 * DISPENSED)) as usize;
    let consumers: Vec<_> = fleet[..2]
        .iter()
        .map(|h| {
            let h = Arc::clone(h);
            tokio::spawn(async move {
                let events = take(&mut watch(&h).await, expected).await;
                let seen: Seen = events
                    .iter()
                    .map(|e| (e.sequence, e.prescription_number.clone(), e.kind()))
                    .collect();
                seen
            })
        })
        .collect();
    let writers: Vec<_> = fleet
        .iter()
        .enumerate()
        .map(|(g, h)| {
            let h = Arc::clone(h);
            tokio::spawn(async move {
                write_through(h, &format!("FLEET-FEED-{g}"), 8000 + 100 * g as u32).await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for task in writers {
        numbers.push(task.await.unwrap());
    }
    let mut views = Vec::new();
    for task in consumers {
        views.push(task.await.unwrap());
    }
    // Both consumers saw the same feed: every event once, numbers rising.
    assert_eq!(views[0], views[1]);
    let seen = &views[0];
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    let mut kinds: BTreeMap<&str, Vec<pb::EventKind>> = BTreeMap::new();
    for (_, number, kind) in seen {
        kinds.entry(number).or_default().push(*kind);
    }
    use pb::EventKind::{Accepted, DispensingRecorded, Registered};
    for number in numbers.iter().flat_map(|n| n.iter().enumerate()) {
        let want = if number.0 < DISPENSED as usize {
            vec![Registered, Accepted, DispensingRecorded]
        } else {
            vec![Registered]
        };
        assert_eq!(kinds.get(number.1.as_str()), Some(&want), "{}", number.1);
    }
    assert_eq!(kinds.len(), 3 * WRITTEN as usize);
    for h in fleet {
        Arc::into_inner(h).unwrap().shutdown().await;
    }
}

const MAX_MISSES: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lockout_is_reached_through_two_gateways() {
    let Some(fleet) = fleet::start(2, |c| c.lookup_max_misses = MAX_MISSES).await else {
        return;
    };
    let n = 9000;
    let request = registration(&fleet[0], "FLEET-LOCK", n);
    let exchange = register_through(&fleet[0], "clinic", request)
        .await
        .unwrap()
        .exchange_number;
    let wrong = if exchange == "000001" {
        "000002"
    } else {
        "000001"
    };
    let lookup = |exchange: &str| pb::LookupPrescriptionRequest {
        patient_key: Some(patient(n)),
        exchange_number: exchange.into(),
    };
    // The misses alternate between the gateways: neither alone reaches the limit.
    for i in 0..MAX_MISSES {
        let mut pharmacy = fleet[i as usize % 2].pharmacy("pharmacy").await;
        let e = pharmacy
            .lookup_prescription(lookup(wrong))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "miss {i}");
    }
    for h in &fleet {
        let e = h
            .pharmacy("pharmacy")
            .await
            .lookup_prescription(lookup(&exchange))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("lookup_max_misses"), "{}", e.message());
    }
    // Another pharmacy, through either gateway, is answered.
    fleet[1]
        .pharmacy("pharmacy2")
        .await
        .lookup_prescription(lookup(&exchange))
        .await
        .unwrap();
    for h in fleet {
        h.shutdown().await;
    }
}

/// The lines a pre-issue check of patient `n` asks about through `h`, as the dev clinic.
async fn check_through(h: &Harness, n: u32, lines: &[&str]) -> Result<(), tonic::Status> {
    let (clinic, code) = CLINICS[0];
    let draft = prescription(h, code, "FLEET-BUDGET", n, lines);
    let request = pb::CheckPrescriptionRequest {
        draft: Some(draft),
        ..Default::default()
    };
    h.clinic(clinic).await.check_prescription(request).await?;
    Ok(())
}

/// A patient's check budget (`[limits] patient_check_lines`) is kept in the database: lines
/// checked through one gateway are spent on the other too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_check_budget_is_spent_through_two_gateways() {
    let Some(fleet) = fleet::start(2, |c| c.limits.patient_check_lines = 3).await else {
        return;
    };
    let n = 9100;
    check_through(&fleet[0], n, &[TRIAZOLAM, TRIAZOLAM])
        .await
        .unwrap();
    // Two more lines would pass the budget, whichever gateway is asked.
    for h in &fleet {
        let e = check_through(h, n, &[TRIAZOLAM, TRIAZOLAM])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    }
    check_through(&fleet[1], n, &[TRIAZOLAM]).await.unwrap();
    // Another patient's budget is whole.
    check_through(&fleet[1], n + 1, &[TRIAZOLAM, TRIAZOLAM])
        .await
        .unwrap();
    for h in fleet {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_of_one_identity_is_refused_and_starts_once_the_first_stopped() {
    let Some(mut fleet) = fleet::start(1, |_| {}).await else {
        return;
    };
    let h = fleet.pop().unwrap();
    let (twin, clock) = (fleet::twin(&h), Arc::clone(&h.clock));
    // Started while the first runs: it waits out the claim, which the first keeps renewing.
    let refused = app::start(twin.clone(), clock.clone()).await.err();
    let said = format!("{:#}", refused.expect("a second process is refused"));
    assert!(
        said.contains("another process with this [gateway] identity"),
        "{said}"
    );
    // Stopped, the first gives the identity up: the next process starts without waiting out a
    // claim (a claim kept would refuse it, after waiting some 13 s).
    h.shutdown().await;
    let started = std::time::Instant::now();
    let next = app::start(twin, clock).await.unwrap();
    assert!(started.elapsed() < IDENTITY_TERM, "{:?}", started.elapsed());
    next.shutdown().await.unwrap();
}
