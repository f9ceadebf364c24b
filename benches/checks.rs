//! The clinical checks: `domain::checks::check` over the shipped master and contraindication table,
//! with histories of 10, 100 and 1,000 medications against 1, 5 and 10 new lines (criterion means),
//! then a table of p50 / p99 / max over individually timed calls (the store writer's budget is a
//! p99), and the load of the shipped master.
//! `cargo bench --bench checks`

use std::{
    hint::black_box,
    path::Path,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use rxgate::{
    domain::{
        checks::{
            CheckInput, CheckOptions, ContraindicationTable, DrugCode, Medication, NewLine, Source,
            SourceId, SourceKind, Supply, check,
        },
        ids::InstitutionCode,
        master::Catalog,
        time::JapanDate,
    },
    master_files,
};

const HISTORY_SIZES: [usize; 3] = [10, 100, 1_000];
const NEW_LINE_COUNTS: [usize; 3] = [1, 5, 10];

/// The institution running the check; part of the history is its own (excluded by default).
const CALLER: &str = "1310000017";
const CLINICS: [&str; 4] = [CALLER, "1320000012", "1330000019", "1310000025"];
const PHARMACIES: [&str; 3] = ["1340000011", "1340000029", "1340000037"];

/// What a patient's history holds: chronic and acute medications from the shipped master,
/// including the other side of contraindicated pairs (イトリゾール, クラリス, ニトロペン,
/// アンカロン, ノービア, エフピー) and of duplicates (カデュエット, リピトール, ノルバスク).
const HISTORY_DRUGS: [&str; 30] = [
    "610443014", // リピトール
    "612170710", // ノルバスク
    "621932701", // カデュエット配合錠1番
    "616290177", // イトリゾール
    "616140105", // クラリス
    "613330003", // ワーファリン
    "620004541", // ニトロペン
    "610412202", // パリエット
    "620098801", // ロキソニン
    "612320350", // ガスター
    "610443053", // バイアスピリン
    "620003469", // プラビックス
    "610432013", // ブロプレス
    "620002477", // クレストール
    "622225001", // エリキュース
    "621974701", // メトグルコ
    "610443047", // マイスリー
    "611170513", // デパス
    "620004625", // レンドルミン
    "622057301", // フェブリク
    "661140080", // ボルタレンサポ (external)
    "620335601", // ニトロダームTTS (external)
    "616290165", // ジフルカン
    "612120358", // アンカロン
    "622054801", // ノービア
    "620005364", // エフピー
    "610451012", // イミグラン
    "622069502", // レクサプロ
    "621925801", // クラビット
    "622404501", // タケキャブ
];

/// The new prescription's lines, in the three code kinds a prescription carries.
fn new_drugs() -> [DrugCode; 10] {
    let rc = |c: &str| DrugCode::Receipt(c.into());
    [
        // ハルシオン: 禁忌 with イトリゾール and クラリス
        rc("611120055"),
        // バイアグラ: 禁忌 with ニトロペン and アンカロン
        rc("628700702"),
        // リピトール: a duplicate of カデュエット
        rc("610443014"),
        // ロスバスタチン by 一般名コード, ノルバスク by YJ code
        DrugCode::Generic("2189017F1ZZZ".into()),
        DrugCode::Yj("2171022F2025".into()),
        // イミグラン: conditional with エフピー
        rc("610451012"),
        // ロキソニン, ガスター, レクサプロ, アルダクトンA
        rc("620098801"),
        rc("612320350"),
        rc("622069502"),
        rc("620004915"),
    ]
}

/// A fixed-seed linear congruential generator: every run checks the same histories.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize % n
    }
}

fn inst(code: &str) -> InstitutionCode {
    code.parse().unwrap()
}

/// Taken a few days ago from another clinic, in every history: the other side of 禁忌 pairs
/// (イトリゾール, ニトロペン) and of a duplicate (カデュエット) with the new lines.
const CURRENT_DRUGS: [&str; 3] = ["616290177", "620004541", "621932701"];

/// `size` medications: `CURRENT_DRUGS`, then drugs started over the year before `today` (so about
/// a fifth are active) by several clinics, half of them dispensed by several pharmacies, written
/// by receipt code mostly and by YJ or generic-name code otherwise.
fn history(catalog: &Catalog, today: JapanDate, size: usize) -> Vec<Medication> {
    let mut rng = Lcg(size as u64);
    (0..size)
        .map(|i| {
            let (receipt, start, supply, clinic) = match CURRENT_DRUGS.get(i) {
                Some(receipt) => (*receipt, today.add_days(-3), Supply::Days(30), CLINICS[1]),
                None => {
                    let receipt = HISTORY_DRUGS[rng.below(HISTORY_DRUGS.len())];
                    let start = today.add_days(-(rng.below(365) as i32));
                    let supply = match rng.below(20) {
                        0 => Supply::AsNeeded,
                        1 => Supply::External,
                        n => Supply::Days([7, 14, 28, 30, 56, 90][n % 6]),
                    };
                    (receipt, start, supply, CLINICS[rng.below(CLINICS.len())])
                }
            };
            let record = catalog.master().record(receipt).unwrap();
            let drug = match (rng.below(10), &record.yj_code, &record.generic_name_code) {
                (0 | 1, Some(yj), _) => DrugCode::Yj(yj.clone()),
                (2 | 3, _, Some(generic)) => DrugCode::Generic(generic.clone()),
                _ => DrugCode::Receipt(receipt.into()),
            };
            let (kind, code, prescriber) = if rng.below(2) == 0 {
                let pharmacy = inst(PHARMACIES[rng.below(PHARMACIES.len())]);
                (SourceKind::Dispensing, pharmacy, Some(inst(clinic)))
            } else {
                (SourceKind::Prescription, inst(clinic), None)
            };
            Medication {
                drug,
                start,
                supply,
                source: Source {
                    kind,
                    code,
                    date: start,
                },
                prescriber,
                source_id: SourceId {
                    prescription: (i as u128).to_be_bytes(),
                    record: (kind == SourceKind::Dispensing).then_some(0),
                    line: 0,
                },
            }
        })
        .collect()
}

/// Everything one configuration's calls share.
struct Scenario {
    name: String,
    new_lines: Vec<NewLine>,
    history: Vec<Medication>,
}

struct Fixture {
    catalog: Catalog,
    table: ContraindicationTable,
    caller: InstitutionCode,
    today: JapanDate,
    /// Every optional check on: the most work a request can ask for.
    options: CheckOptions,
    scenarios: Vec<Scenario>,
}

impl Fixture {
    fn load() -> Fixture {
        let (catalog, _) = master_files::load(None).unwrap();
        let table_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/clinical/contraindications_structured.csv");
        let table =
            ContraindicationTable::parse(&std::fs::read_to_string(table_path).unwrap()).unwrap();
        let today: JapanDate = "2025-09-10".parse().unwrap();
        let mut scenarios = Vec::new();
        for size in HISTORY_SIZES {
            for lines in NEW_LINE_COUNTS {
                let new_lines = new_drugs()
                    .into_iter()
                    .take(lines)
                    .enumerate()
                    .map(|(line, drug)| NewLine { line, drug })
                    .collect();
                scenarios.push(Scenario {
                    name: format!("history_{size}/new_{lines}"),
                    new_lines,
                    history: history(&catalog, today, size),
                });
            }
        }
        Fixture {
            catalog,
            table,
            caller: inst(CALLER),
            today,
            options: CheckOptions {
                include_same_institution: false,
                caution: true,
                same_class: true,
                within_prescription: true,
            },
            scenarios,
        }
    }

    fn run(&self, s: &Scenario) -> usize {
        let input = CheckInput {
            caller: &self.caller,
            today: self.today,
            new_lines: &s.new_lines,
            history: &s.history,
        };
        check(&input, &self.catalog, &self.table, &self.options).len()
    }
}

fn criterion_means(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("check");
    for s in &f.scenarios {
        group.bench_function(BenchmarkId::from_parameter(&s.name), |b| {
            b.iter(|| f.run(black_box(s)))
        });
    }
    group.finish();
}

fn master_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("masters");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("load_shipped", |b| {
        b.iter(|| master_files::load(None).unwrap())
    });
    group.finish();
}

/// Times calls one by one (at least 1,000, for about two seconds) and prints p50 / p99 / max.
fn percentiles(f: &Fixture) {
    println!(
        "\n{:<24} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "check (individual calls)", "findings", "mean", "p50", "p99", "max"
    );
    for s in &f.scenarios {
        for _ in 0..100 {
            black_box(f.run(s));
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < 1_000
            || (start.elapsed() < Duration::from_secs(2) && times.len() < 100_000)
        {
            let t = Instant::now();
            black_box(f.run(black_box(s)));
            times.push(t.elapsed());
        }
        times.sort_unstable();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "{:<24} {:>9} {:>10.1?} {:>10.1?} {:>10.1?} {:>10.1?}",
            s.name,
            f.run(s),
            mean,
            at(0.5),
            at(0.99),
            times[times.len() - 1]
        );
    }
    println!();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let f = Fixture::load();
    criterion_means(&mut c, &f);
    master_load(&mut c);
    // Like criterion: `cargo bench` passes --bench; `cargo test --benches` runs each bench once.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test") {
        percentiles(&f);
    }
    c.final_summary();
}
