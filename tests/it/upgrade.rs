//! Upgrades, through the real binary: a store written by an earlier build opens and serves
//! under this one and is stamped with the current layout, and a store written by a newer
//! layout is refused, unchanged, by `serve` and by the commands that read a stopped store.
//! The stores of earlier builds are archives under `tests/data/upgrade/` (its README says how
//! each was made and what it holds); a later layout adds its own and a test of two lines.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::SystemTime,
};

use crate::events::take;
use common::{dev_pki, process::Serve, signed, signer};
use prost::Message;
use rxgate::{
    cli::demo::demo_prescription,
    domain::time::JapanDate,
    service::layout,
    store::{EmbeddedStore, EngineKind, Entry, Store, Table},
    wire::proto::v1::{
        self as pb, PrescriptionState as State, event_service_client::EventServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tonic::transport::Channel;

/// The folder of the stores written by earlier builds.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/upgrade");

/// A store written by an earlier build, as its README records it.
struct Fixture {
    /// The archive, `NAME.tar.gz`, which holds the folder `store/`.
    name: &'static str,
    /// The prescriptions it holds.
    held: &'static [Held],
    /// Its event feed from the start: each event's prescription (its place in `held`) and
    /// state after it.
    events: &'static [(usize, State)],
    /// Its audit records, none of them in a chain (ef6f5b0 wrote none).
    unchained: usize,
    /// The master files imported into it, replayed over the shipped masters at start.
    imported: usize,
}

/// A prescription a fixture holds, registered by the dev clinic 1310000001.
struct Held {
    number: &'static str,
    id: &'static str,
    /// The patient's insurance number (insurer 06139999, symbol 12, branch 01).
    patient: &'static str,
    /// Its state when the fixture was written (a registered one expires after its
    /// usable-through date).
    state: State,
}

/// What ef6f5b0's feed holds in both engines: `rxgate demo` (registered, accepted, dispensed),
/// then `write_fixture` (three registered, one cancelled, one accepted).
const EF6F5B0_EVENTS: &[(usize, State)] = &[
    (0, State::Registered),
    (0, State::Accepted),
    (0, State::Dispensed),
    (1, State::Registered),
    (2, State::Registered),
    (3, State::Registered),
    (2, State::Cancelled),
    (3, State::Accepted),
];

/// The ids and numbers `write_fixture` printed, and the prescription number `rxgate demo` chose.
const EF6F5B0_FJALL: Fixture = Fixture {
    name: "ef6f5b0-fjall",
    held: &[
        Held {
            number: "DEMO-1796575294012",
            id: "1b0c79258c9222300d797a6b08ebeda0",
            patient: "345",
            state: State::Dispensed,
        },
        Held {
            number: "FIX-REGISTERED",
            id: "118de8fb354952f3f35a9c4d238f7412",
            patient: "401",
            state: State::Registered,
        },
        Held {
            number: "FIX-CANCELLED",
            id: "e9b32601575f0b8048776e7135ba46ed",
            patient: "402",
            state: State::Cancelled,
        },
        Held {
            number: "FIX-RECEIVED",
            id: "d200742a8d4a2856a654404bc997f4cb",
            patient: "403",
            state: State::Accepted,
        },
    ],
    events: EF6F5B0_EVENTS,
    unchained: 23,
    imported: 1,
};

const EF6F5B0_SLED: Fixture = Fixture {
    name: "ef6f5b0-sled",
    held: &[
        Held {
            number: "DEMO-1796575319252",
            id: "9a171dcd862784f91eda07889f586021",
            patient: "345",
            state: State::Dispensed,
        },
        Held {
            number: "FIX-REGISTERED",
            id: "13f857459bec267588926c105a3ed101",
            patient: "401",
            state: State::Registered,
        },
        Held {
            number: "FIX-CANCELLED",
            id: "d74efeb6ba8c8b910354fa2b102c5bc2",
            patient: "402",
            state: State::Cancelled,
        },
        Held {
            number: "FIX-RECEIVED",
            id: "8ebeef5aae3bdc881b1629207dc08fd3",
            patient: "403",
            state: State::Accepted,
        },
    ],
    events: EF6F5B0_EVENTS,
    unchained: 23,
    imported: 1,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_store_of_ef6f5b0_opens_and_serves() {
    opens_and_serves(&EF6F5B0_FJALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_of_ef6f5b0_opens_and_serves() {
    opens_and_serves(&EF6F5B0_SLED).await;
}

/// A copy of `fixture` served by this build: its imported master files are replayed; what it
/// holds is found, by id and by patient; a new registration works; the feed replays its events
/// before the new one; once stopped, its audit trail is intact and it is stamped with the
/// current layout.
async fn opens_and_serves(fixture: &Fixture) {
    let (dir, pristine) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let unstamped = stamp(&unpack(fixture.name, pristine.path())).await;
    assert_eq!(unstamped, Ok(None), "written before versioning");
    // The binary opens a copy that no build of this one has opened.
    let store = unpack(fixture.name, dir.path());
    let rxgate = Serve::dev(&store, &dir.path().join("serve.log"))
        .start()
        .await;
    let channel = async |name| dev_pki().client(name).connect(&rxgate.addr).await.unwrap();
    let mut clinic = PrescriptionServiceClient::new(channel("clinic").await);
    for held in fixture.held {
        found(&mut clinic, held).await;
    }

    let new = new_registration(&mut clinic).await;
    let mut feed = EventServiceClient::new(channel("management").await)
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let replayed: Vec<(String, State)> = take(&mut feed, fixture.events.len())
        .await
        .into_iter()
        .map(|e| {
            let state = e.state();
            (e.prescription_number, state)
        })
        .collect();
    let recorded: Vec<(String, State)> = (fixture.events.iter())
        .map(|(held, state)| (fixture.held[*held].number.to_owned(), *state))
        .collect();
    assert_eq!(replayed, recorded);
    // Then the new registration's, after any expiry the sweep wrote meanwhile.
    let mut next = take(&mut feed, 1).await.remove(0);
    while next.prescription_id != new {
        assert_eq!(next.state(), State::Expired, "{next:?}");
        next = take(&mut feed, 1).await.remove(0);
    }
    let replayed = format!("imported_files={}", fixture.imported);
    assert!(rxgate.output().contains(&replayed), "{}", rxgate.output());
    rxgate.kill();

    let verified = rxgate_command(&["audit", "verify", "--data-dir"], &store, true);
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{verified:?}");
    assert!(report.starts_with("intact"), "{report}");
    let before_chains = format!("{} unchained records before them", fixture.unchained);
    assert!(report.contains(&before_chains), "{report}");
    assert_eq!(stamp(&store).await, Ok(Some(layout::CURRENT)));
}

/// The archive `name` unpacked into `into`: the store's folder.
fn unpack(name: &str, into: &Path) -> PathBuf {
    let archive = Path::new(FIXTURES).join(format!("{name}.tar.gz"));
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .output()
        .expect("running tar");
    assert!(tar.status.success(), "unpacking {archive:?}: {tar:?}");
    into.join("store")
}

/// The layout stamp of the stopped store at `dir`, as this build reads it.
async fn stamp(dir: &Path) -> Result<Option<u32>, String> {
    let store = EmbeddedStore::open(dir).unwrap();
    let stamp = layout::check(&store).await.map_err(|e| e.to_string());
    store.close().unwrap();
    stamp
}

/// The insurance key of a fixture's patient.
pub(crate) fn patient(number: &str) -> pb::PatientKey {
    pb::PatientKey {
        kind: Some(pb::patient_key::Kind::Insurance(pb::InsuranceKey {
            insurer_number: "06139999".into(),
            symbol: "12".into(),
            number: number.into(),
            branch: "01".into(),
        })),
    }
}

/// `held` is found by its id, in the state it was left in, and by a search for its patient.
async fn found(clinic: &mut PrescriptionServiceClient<Channel>, held: &Held) {
    let status = clinic
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: held.id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", held.number))
        .into_inner();
    let today = JapanDate::of(SystemTime::now()).to_string();
    let state = match held.state {
        State::Registered if today > status.usable_through => State::Expired,
        state => state,
    };
    assert_eq!(
        (status.prescription_number.as_str(), status.state()),
        (held.number, state)
    );
    let search = clinic
        .search_prescriptions(pb::SearchPrescriptionsRequest {
            patient_key: Some(patient(held.patient)),
            issued_from: status.issue_date.clone(),
            issued_to: status.issue_date,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        search
            .prescriptions
            .iter()
            .any(|p| p.prescription_id == held.id),
        "{}: not found by its patient",
        held.number
    );
}

/// Registers a prescription for a patient no fixture holds; its id.
async fn new_registration(clinic: &mut PrescriptionServiceClient<Channel>) -> String {
    let now = SystemTime::now();
    let rx = demo_prescription("UPGRADE-NEW", patient("499"), JapanDate::of(now));
    let registered = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(signed(&signer("doctor"), rx.encode_to_vec(), now)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.state(), State::Registered);
    registered.prescription_id
}

/// `rxgate ARGS DIR`, with the dev gateway's certificate if `gateway_cert`.
fn rxgate_command(args: &[&str], dir: &Path, gateway_cert: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rxgate"));
    command.args(args).arg(dir);
    if gateway_cert {
        command.arg("--gateway-cert").arg(dev_pki().gateway().cert);
    }
    command.output().expect("running rxgate")
}

/// Every entry of every table of the stopped store at `dir`.
async fn entries(dir: &Path) -> Vec<(Table, Vec<Entry>)> {
    let store = EmbeddedStore::open(dir).unwrap();
    let all = store.transact(|tx| {
        let scan = |table| tx.scan_prefix(table, b"", usize::MAX).map(|e| (table, e));
        Table::ALL
            .into_iter()
            .map(scan)
            .collect::<Result<Vec<_>, _>>()
    });
    let all = all.await.unwrap().unwrap();
    store.close().unwrap();
    all
}

/// A store of `engine` stamped with the layout after this build's: `serve` refuses it and exits
/// 2 (an error), so do `audit verify` and `audit checkpoints`, each naming both layouts, and
/// none of its entries changes. (Its files may: each engine tidies them when it opens.)
async fn a_newer_store_is_refused_unchanged(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let newer = EmbeddedStore::open_with(&store, Some(engine), 8).unwrap();
    newer
        .transact(|tx| {
            // The stamp as it is stored (`service/schema/layout.rs` pins it), and a search index
            // entry of the layout before versioning, which a migration would rewrite.
            tx.put(Table::Meta, b"layout", &(layout::CURRENT + 1).to_be_bytes());
            tx.put(Table::ByPatient, b"P\x002026-12-01\0id1", b"");
            Ok::<_, rxgate::store::Error>(())
        })
        .await
        .unwrap()
        .unwrap();
    newer.close().unwrap();
    let before = entries(&store).await;

    let message = format!(
        "this store was written by layout {}, newer than this rxgate (layout {})",
        layout::CURRENT + 1,
        layout::CURRENT
    );
    let (exited, log) = Serve::dev(&store, &dir.path().join("serve.log"))
        .refused()
        .await;
    assert_eq!(exited, "exit status: 2", "{log}");
    assert!(log.contains(&message), "{log}");
    for (args, gateway_cert) in [
        (&["audit", "verify", "--data-dir"][..], true),
        (&["audit", "checkpoints", "--data-dir"][..], false),
    ] {
        let refused = rxgate_command(args, &store, gateway_cert);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {refused:?}");
        assert!(stderr.contains(&message), "{args:?}: {stderr}");
    }
    assert!(
        entries(&store).await == before,
        "the store's entries changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_fjall_store_is_refused_unchanged() {
    a_newer_store_is_refused_unchanged(EngineKind::Fjall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_sled_store_is_refused_unchanged() {
    a_newer_store_is_refused_unchanged(EngineKind::Sled).await;
}
