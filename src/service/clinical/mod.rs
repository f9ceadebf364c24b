//! The clinical checks inside the gateway: the drug master and contraindication table in force,
//! the checker that runs them on a patient's history (history.rs, the index a check reads), the
//! check policy and budget (policy.rs), the records a check leaves behind (the consent asserted,
//! the findings acknowledged), and the history's one-off migration (migration.rs).

mod history;
mod migration;
mod policy;

use history::active_medications;
pub use history::{
    Dispensed, PatientHistory, Prescribed, admit_prescribed, index_dispensing, index_prescription,
    unindex_prescription,
};
pub(in crate::service) use migration::{merge_history, migrate_history};
pub use policy::{
    Acknowledgement, Budget, CheckRequest, OnCritical, RequestedOptions, budget_refusal,
    budgeted_consent, record_consent, spend_check_budget, unacknowledged,
};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    domain::{
        checks::{
            self, CheckInput, CheckOptions, Consent, ContraindicationTable, DrugCode, Finding,
            Indicator, NewLine,
        },
        ids::InstitutionCode,
        master::Catalog,
        time::JapanDate,
    },
    limits::Limits,
    master_files::{LoadReport, Sources},
    metrics::Metrics,
    store::{self, Txn},
};

/// The drug master and the contraindication table a check runs on.
#[derive(Debug)]
pub struct Clinical {
    pub catalog: Catalog,
    pub table: ContraindicationTable,
    /// The files they were built from (an import changes these and rebuilds).
    pub sources: Sources,
    /// What the build found.
    pub report: LoadReport,
    /// The imports' version they were built at: the number of files imported into the store
    /// and applied over the shipped data (0: the shipped data as it is).
    pub version: u64,
}

/// The drugs of a prescription's (or a dispensing's) lines as the checks take them, numbered
/// from 0.
pub fn new_lines<'a>(drugs: impl Iterator<Item = &'a DrugCode>) -> Vec<NewLine> {
    drugs
        .enumerate()
        .map(|(i, drug)| NewLine {
            line: i,
            drug: drug.clone(),
        })
        .collect()
}

/// Who checks what, on which day, for which patient.
pub struct Subject<'a> {
    pub caller: &'a InstitutionCode,
    pub patient: &'a super::PatientPseudonym,
    pub today: JapanDate,
    pub lines: &'a [NewLine],
    /// The prescription under check: its own entries never count.
    pub exclude: Option<&'a str>,
}

/// The findings of a check as answered: every critical finding, and the others up to the
/// configured number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Findings {
    pub shown: Vec<Finding>,
    /// The warning and info findings left out.
    pub omitted: u32,
}

impl Findings {
    /// Keeps every critical finding and `max` others, warnings before info (so that findings of
    /// lesser weight, which a history's unknown codes can multiply, never push a warning out),
    /// each in their order.
    pub fn capped(findings: Vec<Finding>, max: usize) -> Findings {
        let warnings = findings
            .iter()
            .filter(|f| f.indicator == Indicator::Warning)
            .count();
        let (mut warnings_room, mut info_room) = (max, max.saturating_sub(warnings));
        let mut omitted = 0u32;
        let shown = findings
            .into_iter()
            .filter(|f| {
                let room = match f.indicator {
                    Indicator::Critical => return true,
                    Indicator::Warning => &mut warnings_room,
                    Indicator::Info => &mut info_room,
                };
                let keep = *room > 0;
                *room = room.saturating_sub(1);
                omitted += u32::from(!keep);
                keep
            })
            .collect();
        Findings { shown, omitted }
    }
}

/// The data in force for a check, where its time is counted, and the bounds it keeps.
pub struct Checker {
    pub clinical: Arc<Clinical>,
    pub metrics: Arc<Metrics>,
    /// Read: `history_entries_per_patient` and `findings_per_answer`.
    pub limits: Limits,
}

impl Checker {
    /// Reads the patient's history and runs the checks of `subject` against it.
    pub fn run(
        &self,
        tx: &dyn Txn,
        subject: &Subject<'_>,
        (options, consent): (&CheckOptions, Consent),
        took: &mut Option<Duration>,
    ) -> Result<Findings, store::Error> {
        let history = PatientHistory::read(tx, subject.patient)?;
        self.run_on(tx, subject, &history, (options, consent), took)
    }

    /// Runs the checks of `subject` against the patient's history as already read, masks the
    /// findings as the consent requires and caps the non-critical ones. A history over the
    /// configured size is not read in part: every line gets a critical not-checked finding.
    /// How long it took goes to `took` (the call's draft), for the metric observed once the
    /// transaction has committed: a transaction function changes nothing outside its `Txn`.
    pub fn run_on(
        &self,
        tx: &dyn Txn,
        subject: &Subject<'_>,
        history: &PatientHistory,
        (options, consent): (&CheckOptions, Consent),
        took: &mut Option<Duration>,
    ) -> Result<Findings, store::Error> {
        let started = Instant::now();
        let findings = if history.0.len() > self.limits.history_entries_per_patient {
            checks::not_checked_history_too_large(subject.lines)
        } else {
            let history = active_medications(tx, &history.0, subject.today, subject.exclude)?;
            let input = CheckInput {
                caller: subject.caller,
                today: subject.today,
                new_lines: subject.lines,
                history: &history,
            };
            let c = &self.clinical;
            checks::check(&input, &c.catalog, &c.table, options)
        };
        let findings = checks::mask(findings, consent);
        *took = Some(started.elapsed());
        Ok(Findings::capped(findings, self.limits.findings_per_answer))
    }
}

#[cfg(test)]
mod tests {
    use super::{history::*, migration::*, *};
    use crate::{
        domain::{
            checks::{SourceKind, Supply},
            hash,
            rx::{DispensedLineFacts, RxLine},
        },
        service::{
            records::{
                DrugKindV1, HistoryEntryV1, HistoryRecord, MedicationRecord, SlotV1, SlotV2,
                SupplyV1, decode, encode,
            },
            schema::{history_key, old_dispensed_line_key, old_prescribed_line_key},
            testing::{fixed_pseudonyms, keyed},
        },
        store::{Store, Table},
    };
    use crate::{service::records::MedicationV1, store::EmbeddedStore};

    const TODAY: &str = "2026-12-01";

    #[test]
    fn a_capped_answer_keeps_every_critical_and_warnings_before_info() {
        let finding = |line: usize, indicator: Indicator| Finding {
            id: format!("F-{line}"),
            kind: checks::FindingKind::NotChecked,
            indicator,
            summary: String::new(),
            line,
            own: None,
            others: Vec::new(),
            rule: None,
        };
        use Indicator::{Critical, Info, Warning};
        // Info on the first lines (as unknown history codes give), warnings after them.
        let all = vec![
            finding(0, Info),
            finding(1, Info),
            finding(2, Critical),
            finding(3, Warning),
            finding(4, Critical),
            finding(5, Warning),
            finding(6, Info),
        ];
        let kept = |max| {
            let capped = Findings::capped(all.clone(), max);
            let lines: Vec<_> = capped.shown.iter().map(|f| f.line).collect();
            (lines, capped.omitted)
        };
        assert_eq!(kept(1), (vec![2, 3, 4], 4));
        assert_eq!(kept(3), (vec![0, 2, 3, 4, 5], 2));
        assert_eq!(kept(10), (vec![0, 1, 2, 3, 4, 5, 6], 0));
    }

    /// The `n`th test prescription's id.
    fn rx(n: u8) -> String {
        hash::hex(&[n; 16])
    }

    fn day(text: &str) -> i32 {
        text.parse::<JapanDate>().unwrap().days_since_epoch()
    }

    fn line(id: &str, source_id: String, dispensed: bool) -> MedicationV1 {
        MedicationV1 {
            drug_kind: DrugKindV1::Receipt,
            code: "610443014".into(),
            start: TODAY.into(),
            supply: SupplyV1::Days(14),
            dispensed,
            source_code: "1310000017".into(),
            prescriber: "1310000017".into(),
            prescription_id: id.into(),
            source_id,
        }
    }

    fn put_old(tx: &mut dyn Txn, key: Vec<u8>, m: MedicationV1) {
        tx.put(Table::Medications, &key, &encode(&MedicationRecord::V1(m)));
    }

    async fn read<T: Send + 'static>(
        store: &Arc<dyn Store>,
        f: impl Fn(&mut dyn Txn) -> Result<T, store::Error> + Send + Sync + 'static,
    ) -> T {
        store.transact(f).await.unwrap().unwrap()
    }

    /// A store of the per-line layout (with zero bytes in its keys, a patient spanning several
    /// chunks, a dispensed line past its last day) reads the same history after the migration,
    /// keeps no old key, and is migrated only once.
    #[tokio::test]
    async fn old_layout_histories_move_into_one_record_per_patient() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        const MANY: u32 = 2 * MIGRATION_CHUNK as u32 + 500;
        read(&store, |tx| {
            let (p1, p2, p3, p4) = (rx(1), rx(2), rx(3), rx(4));
            for l in [1, 0] {
                put_old(
                    tx,
                    old_prescribed_line_key("A", &p1, l),
                    line(&p1, format!("rx:{p1}:{l}"), false),
                );
            }
            let d = |day: &str, l: u32| old_dispensed_line_key("A", day, &p2, 1, l);
            put_old(
                tx,
                d("2026-12-20", 0),
                line(&p2, format!("disp:{p2}:1:0"), true),
            );
            put_old(
                tx,
                d("2026-11-01", 1),
                line(&p2, format!("disp:{p2}:1:1"), true),
            );
            put_old(
                tx,
                old_prescribed_line_key("B", &p3, 0),
                line(&p3, format!("rx:{p3}:0"), false),
            );
            for l in 0..MANY {
                put_old(
                    tx,
                    old_prescribed_line_key("C", &p4, l),
                    line(&p4, format!("rx:{p4}:{l}"), false),
                );
            }
            Ok(())
        })
        .await;

        assert_eq!(
            migrate_history(&store, &fixed_pseudonyms()).await.unwrap(),
            5 + u64::from(MANY)
        );

        let today: JapanDate = TODAY.parse().unwrap();
        let (a, a_history, b, c, old_keys) = read(&store, move |tx| {
            let old_keys = tx
                .scan_prefix(Table::Medications, b"", usize::MAX)?
                .into_iter()
                .filter(|(k, _)| k.contains(&0))
                .count();
            Ok((
                load(tx, &keyed("A"))?,
                active_medications(tx, &load(tx, &keyed("A"))?, today, None)?,
                load(tx, &keyed("B"))?,
                load(tx, &keyed("C"))?,
                old_keys,
            ))
        })
        .await;
        assert_eq!(old_keys, 0);
        let slots: Vec<_> = a.iter().map(|e| e.slot).collect();
        let dispensed = |last_day: &str, line: u32| SlotV2::Dispensed {
            last_day: day(last_day),
            record: 1,
            line,
        };
        assert_eq!(
            slots,
            [
                SlotV2::Undispensed { line: 0 },
                SlotV2::Undispensed { line: 1 },
                dispensed("2026-11-01", 1),
                dispensed("2026-12-20", 0),
            ]
        );
        let ids: Vec<_> = a_history.iter().map(|m| m.source_id.to_string()).collect();
        let (p1, p2) = (rx(1), rx(2));
        assert_eq!(
            ids,
            [
                format!("rx:{p1}:0"),
                format!("rx:{p1}:1"),
                format!("disp:{p2}:1:0")
            ]
        );
        assert_eq!(b.len(), 1);
        assert_eq!(c.len(), MANY as usize);
        assert!(c.windows(2).all(|w| order(&w[0]) < order(&w[1])));

        // Marked as done: an old-layout key written now is not moved again.
        read(&store, |tx| {
            let p5 = rx(5);
            put_old(
                tx,
                old_prescribed_line_key("D", &p5, 0),
                line(&p5, format!("rx:{p5}:0"), false),
            );
            Ok(())
        })
        .await;
        assert_eq!(
            migrate_history(&store, &fixed_pseudonyms()).await.unwrap(),
            0
        );
    }

    /// Writing a patient's record drops the dispensed lines that can no longer be active, and a
    /// dispensing replaces the undispensed line it fills.
    #[test]
    fn a_record_keeps_only_what_may_be_active() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let today: JapanDate = TODAY.parse().unwrap();
        let entries = runtime.block_on(read(&store, move |tx| {
            let drug = || DrugCode::Receipt("610443014".into());
            let lines = vec![
                RxLine {
                    drug: drug(),
                    supply: Supply::Days(7),
                };
                2
            ];
            let history = PatientHistory::read(tx, &keyed("A"))?;
            index_prescription(
                tx,
                history,
                &Prescribed {
                    patient: &keyed("A"),
                    id: &rx(1),
                    institution: "1310000017",
                    issue_date: today.add_days(-30),
                    lines: &lines,
                },
                today.add_days(-30),
            )?;
            let facts = [DispensedLineFacts {
                prescription_line: 1,
                drug: drug(),
                days_supplied: 7,
                complete: true,
            }];
            let dispensed = Dispensed {
                patient: &keyed("A"),
                prescription_id: &rx(1),
                prescriber: "1310000017",
                pharmacy: "1340000011",
                date: today.add_days(-30),
                record_number: 1,
                prescribed: &lines,
                lines: &facts,
            };
            index_dispensing(tx, &dispensed, today.add_days(-30), &Limits::default())
                .map_err(|e| store::Error::Engine(e.to_string()))?;
            let after = load(tx, &keyed("A"))?;
            // A later write, on a day past the dispensed line's last one, drops it.
            unindex_prescription(tx, &keyed("A"), &rx(1), today)?;
            Ok((after, load(tx, &keyed("A"))?))
        }));
        let (after_dispensing, later) = entries;
        let slots: Vec<_> = after_dispensing.iter().map(|e| e.slot).collect();
        assert_eq!(
            slots,
            [
                SlotV2::Undispensed { line: 0 },
                SlotV2::Dispensed {
                    last_day: today.add_days(-30 + 13).days_since_epoch(),
                    record: 1,
                    line: 0,
                },
            ]
        );
        assert!(later.is_empty());
    }

    /// A version-1 record (one per patient, text fields) reads as version 2 with the same
    /// source ids, so finding ids stay the same; the patient's next change writes it as
    /// version 2; an entry whose kept source id disagrees with its slot is refused as corrupt.
    #[tokio::test]
    async fn version_1_records_read_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let (p1, p2) = (rx(1), rx(2));
        let v1 = |slot: SlotV1, medication: MedicationV1| HistoryEntryV1 { slot, medication };
        let record = HistoryRecord::V1(vec![
            v1(
                SlotV1::Undispensed { line: 0 },
                line(&p1, format!("rx:{p1}:0"), false),
            ),
            v1(
                SlotV1::Dispensed {
                    last_day: "2026-12-20".into(),
                    record: 2,
                    line: 0,
                },
                MedicationV1 {
                    source_code: "1340000011".into(),
                    ..line(&p2, format!("disp:{p2}:2:0"), true)
                },
            ),
        ]);
        let mut wrong = line(&p1, format!("rx:{p1}:1"), false);
        wrong.source_id = format!("rx:{p1}:9");
        let bad = HistoryRecord::V1(vec![v1(SlotV1::Undispensed { line: 1 }, wrong)]);
        let today: JapanDate = TODAY.parse().unwrap();
        let (history, bad_read, stored) = read(&store, move |tx| {
            tx.put(
                Table::Medications,
                history_key(&keyed("A")),
                &encode(&record),
            );
            tx.put(Table::Medications, history_key(&keyed("B")), &encode(&bad));
            let history = active_medications(tx, &load(tx, &keyed("A"))?, today, None)?;
            let bad_read = load(tx, &keyed("B")).map(|_| ());
            // A new prescription for A: the record is written again, as version 2.
            let lines = [RxLine {
                drug: DrugCode::Receipt("610443014".into()),
                supply: Supply::Days(7),
            }];
            let prescribed = Prescribed {
                patient: &keyed("A"),
                id: &rx(3),
                institution: "1310000017",
                issue_date: today,
                lines: &lines,
            };
            let before = PatientHistory::read(tx, &keyed("A"))?;
            index_prescription(tx, before, &prescribed, today)?;
            let stored = tx
                .get(Table::Medications, history_key(&keyed("A")))?
                .unwrap();
            Ok((history, bad_read, stored))
        })
        .await;
        let ids: Vec<_> = history.iter().map(|m| m.source_id.to_string()).collect();
        assert_eq!(ids, [format!("rx:{p1}:0"), format!("disp:{p2}:2:0")]);
        assert_eq!(history[1].source.kind, SourceKind::Dispensing);
        assert_eq!(history[1].source.code.as_str(), "1340000011");
        assert_eq!(
            history[1].prescriber.as_ref().map(InstitutionCode::as_str),
            Some("1310000017")
        );
        assert_eq!(history[0].start, today);
        assert!(matches!(bad_read, Err(store::Error::Corrupt(_))));
        let HistoryRecord::V2(entries) = decode(&stored).unwrap() else {
            panic!("the record was written again as version 1");
        };
        assert_eq!(entries.len(), 3);
        assert!(entries.windows(2).all(|w| order(&w[0]) < order(&w[1])));
    }
}
