//! Tests of the drug master (`rxgate::domain::master`) on small fixtures cut from the official
//! SSK / MHLW files (tests/data/master/, provenance in its README.md), and — when `RXGATE_MASTERS`
//! names the directory of the full published files — on the full master with all its updates.
//! Reads files only here, never in the module; depends on nothing but the crate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rxgate::domain::master::*;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/master")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

fn y_fixture(name: &str) -> Vec<YRecord> {
    parse_y_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The 2024-03-21 full-file cut with the cut update files applied in date order.
fn fixture_master() -> (Master, Vec<UpdateSummary>) {
    let mut m = Master::from_full(y_fixture("y_ALL20240321_cut.csv")).unwrap();
    let summaries = [
        "y_20240417_cut.csv",
        "y_20240628_cut.csv",
        "y_20240906_cut.csv",
        "y_20240925_cut.csv",
    ]
    .iter()
    .map(|f| m.apply_update(&y_fixture(f)).unwrap())
    .collect();
    (m, summaries)
}

fn fixture_ingredients() -> Ingredients {
    Ingredients::from_texts(
        &fixture_text("mhlw_yakka_list_20250716_cut.csv"),
        &fixture_text("ippan_master_20250814_cut.csv"),
    )
    .unwrap()
}

fn fixture_catalog() -> Catalog {
    Catalog::new(fixture_master().0, fixture_ingredients())
}

/// Builds one 42-column y-file row (UTF-8) for the synthetic error cases.
fn y_row(kind: &str, code: &str, set: &[(usize, &str)]) -> String {
    let mut f = vec![String::new(); 42];
    f[0] = kind.into();
    f[1] = "Y".into();
    f[2] = code.into();
    for (col, v) in set {
        f[col - 1] = (*v).into();
    }
    let quoted: Vec<String> = f.iter().map(|x| format!("\"{x}\"")).collect();
    quoted.join(",") + "\r\n"
}

// ---------------------------------------------------------------------------------------------
// The y-file parser

#[test]
fn full_file_rows_parse_40_columns() {
    let rows = y_fixture("y_ALL20240321_cut.csv");
    assert_eq!(rows.len(), 11);
    let gaster = &rows[0];
    assert_eq!(gaster.line, 1);
    assert_eq!(gaster.kind, ChangeKind::Continued);
    assert_eq!(gaster.receipt_code, "610406079");
    assert_eq!(gaster.name.as_deref(), Some("ガスター散２％"));
    assert_eq!(gaster.unit.as_deref(), Some("ｇ"));
    assert_eq!(gaster.price.as_deref(), Some("16.50"));
    assert_eq!(gaster.dosage_form, Some(DosageForm::Internal));
    assert_eq!(gaster.changed_on, Some(20240401));
    assert_eq!(gaster.abolished_on, Some(NOT_ABOLISHED));
    assert!(gaster.is_current());
    assert_eq!(gaster.yj_code.as_deref(), Some("2325003B2029"));
    assert_eq!(gaster.transitional_until, Some(0));
    assert_eq!(gaster.generic_name_code.as_deref(), Some("2325003B2ZZZ"));
    assert_eq!(
        gaster.generic_name_label.as_deref(),
        Some("【般】ファモチジン散２％")
    );
    assert_eq!(
        gaster.long_listed_original, None,
        "40 columns: no column 41"
    );
    assert_eq!(gaster.original_code(), None);
    // The full file also carries 5 rows (all fields filled) and 剤形 3 pseudo-products.
    let pseudo = rows.iter().find(|r| r.receipt_code == "630010022").unwrap();
    assert_eq!(pseudo.kind, ChangeKind::Changed);
    assert_eq!(pseudo.dosage_form, Some(DosageForm::Other));
    assert_eq!(pseudo.yj_code, None);
    // Injection by 剤形 and by YJ digits 5-7.
    let inj = rows.iter().find(|r| r.receipt_code == "620003458").unwrap();
    assert_eq!(inj.dosage_form, Some(DosageForm::Injection));
    assert_eq!(
        Route::from_yj(inj.yj_code.as_deref().unwrap()),
        Some(Route::Injection)
    );
}

#[test]
fn update_rows_parse_partial_and_42_columns() {
    let rows = y_fixture("y_20240906_cut.csv");
    assert_eq!(rows.len(), 3);
    let changed = rows.iter().find(|r| r.receipt_code == "620000167").unwrap();
    assert_eq!(changed.kind, ChangeKind::Changed);
    assert_eq!(changed.name, None, "a 5 row fills only the changed fields");
    assert_eq!(changed.abolished_on, None);
    assert_eq!(changed.changed_on, Some(20241001));
    assert_eq!(changed.selective_care.as_deref(), Some("1"));
    let sel = rows.iter().find(|r| r.receipt_code == "670000167").unwrap();
    assert_eq!(sel.kind, ChangeKind::New);
    assert_eq!(sel.name.as_deref(), Some("ラシックス錠２０ｍｇ（選）"));
    assert_eq!(sel.original_code(), Some("620000167"));
    assert_eq!(sel.selective_care.as_deref(), Some("2"));
    assert_eq!(sel.yj_code.as_deref(), Some("2139005F1052"));

    let abolished = &y_fixture("y_20240925_cut.csv")[0];
    assert_eq!(abolished.kind, ChangeKind::Abolished);
    assert_eq!(abolished.abolished_on, Some(20240930));
    assert_eq!(abolished.name, None);
    assert!(!abolished.is_current());

    let transitional = &y_fixture("y_20240628_cut.csv")[0];
    assert_eq!(transitional.transitional_until, Some(20240930));
    assert_eq!(transitional.abolished_on, None);
}

#[test]
fn malformed_rows_name_line_and_column() {
    let good = y_row("5", "620000167", &[(30, "20241001")]);
    let cases: Vec<(String, MasterError)> = vec![
        (
            good.clone() + &y_row("4", "620000167", &[]),
            MasterError::Field {
                line: 2,
                column: 1,
                value: "4".into(),
                msg: "unknown 変更区分",
            },
        ),
        (
            good.clone() + &y_row("5", "62000016", &[]),
            MasterError::Field {
                line: 2,
                column: 3,
                value: "62000016".into(),
                msg: "expected a digit code",
            },
        ),
        (
            good.clone() + &y_row("9", "620000167", &[(31, "20241331")]),
            MasterError::Field {
                line: 2,
                column: 31,
                value: "20241331".into(),
                msg: "expected a date YYYYMMDD",
            },
        ),
        (
            good.clone() + &y_row("5", "620000167", &[(32, "2139005F105")]),
            MasterError::Field {
                line: 2,
                column: 32,
                value: "2139005F105".into(),
                msg: "expected a 12-character code",
            },
        ),
        (
            good.clone() + &y_row("5", "620000167", &[(28, "2")]),
            MasterError::Field {
                line: 2,
                column: 28,
                value: "2".into(),
                msg: "unknown 剤形",
            },
        ),
        (
            good.clone() + &y_row("5", "620000167", &[(41, "6700001")]),
            MasterError::Field {
                line: 2,
                column: 41,
                value: "6700001".into(),
                msg: "expected a digit code",
            },
        ),
        (
            good.clone() + "\"5\",\"Y\",\"620000167\"\r\n",
            MasterError::ColumnCount { line: 2, found: 3 },
        ),
        (
            good.clone() + &good.replace("\"Y\"", "\"Z\""),
            MasterError::Field {
                line: 2,
                column: 2,
                value: "Z".into(),
                msg: "マスター種別 must be Y",
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_y_text(&text), Err(want), "{text}");
    }
    // 41 columns (neither layout).
    let forty_one = good.replacen(",\"\"", "", 1);
    assert_eq!(
        parse_y_text(&forty_one),
        Err(MasterError::ColumnCount { line: 1, found: 41 })
    );
    // Unterminated quote; bytes that are not cp932.
    assert!(matches!(
        parse_y_text(&(good.clone() + "\"5,\"Y\"\r\n")),
        Err(MasterError::Syntax { line: 2, .. })
    ));
    assert_eq!(
        parse_y_file(b"\"5\",\"Y\",\"\x82\"\r\n"),
        Err(MasterError::Encoding("cp932"))
    );
}

// ---------------------------------------------------------------------------------------------
// Updates

#[test]
fn updates_apply_in_date_order() {
    let (m, s) = fixture_master();
    let kinds = |added, changed, abolished| UpdateSummary {
        added,
        changed,
        abolished,
        ..UpdateSummary::default()
    };
    assert_eq!(
        s,
        vec![
            kinds(1, 1, 0),
            kinds(0, 1, 0),
            kinds(1, 2, 0),
            kinds(0, 0, 1)
        ]
    );
    assert_eq!(m.len(), 13);

    // 5: only the non-empty fields overwrite (column 34 set, name kept).
    let citicoline = m.record("620003458").unwrap();
    assert_eq!(citicoline.transitional_until, Some(20250331));
    assert_eq!(
        citicoline.name.as_deref(),
        Some("シチコリン２５％４ｍＬ注射液")
    );
    assert_eq!(citicoline.changed_on, Some(20240417));
    assert!(citicoline.is_current());
    assert!(citicoline.is_usable_on(20250331));
    assert!(
        !citicoline.is_usable_on(20250401),
        "transitional measure expired"
    );

    // 5 then 9: transitional date, then abolished.
    let triazolam = m.record("610412126").unwrap();
    assert_eq!(triazolam.transitional_until, Some(20240930));
    assert_eq!(triazolam.abolished_on, Some(20240930));
    assert!(!triazolam.is_current());
    assert!(triazolam.is_usable_on(20240929));
    assert!(!triazolam.is_usable_on(20240930));
    assert_eq!(
        triazolam.name.as_deref(),
        Some("トリアゾラム錠０．１２５ｍｇ「ＥＭＥＣ」")
    );

    // 3: new products, including a 67-code.
    assert!(m.record("620203502").unwrap().is_current());
    assert_eq!(
        m.record("670000167").unwrap().original_code(),
        Some("620000167")
    );
    assert_eq!(
        m.record("620000167").unwrap().selective_care.as_deref(),
        Some("1")
    );
    assert_eq!(m.current_count(), 12);
}

#[test]
fn synthetic_delete_and_restore() {
    // 1 抹消 and 2 復活 occur in none of the shipped files: synthetic rows.
    let (mut m, _) = fixture_master();
    let s = m
        .apply_update(&y_fixture("synthetic_y_delete_restore.csv"))
        .unwrap();
    assert_eq!(
        s,
        UpdateSummary {
            deleted: 1,
            restored: 1,
            ..UpdateSummary::default()
        }
    );
    assert!(m.record("620006781").is_none(), "deleted");
    let restored = m.record("610412126").unwrap();
    assert!(restored.is_current(), "restored");
    assert_eq!(restored.changed_on, Some(20241001));
    // A 2 row without column 31 also restores.
    let (mut m, _) = fixture_master();
    m.apply_update(&parse_y_text(&y_row("2", "610412126", &[])).unwrap())
        .unwrap();
    assert!(m.record("610412126").unwrap().is_current());
}

#[test]
fn update_not_fitting_the_base_is_refused_whole() {
    // Synthetic: a valid change followed by a row on an unknown code: nothing is applied.
    for (bad, want_kind) in [
        ("5", ChangeKind::Changed),
        ("9", ChangeKind::Abolished),
        ("1", ChangeKind::Deleted),
        ("2", ChangeKind::Restored),
    ] {
        let (mut m, _) = fixture_master();
        let text = y_row("5", "620000167", &[(12, "99.99")])
            + &y_row(bad, "699999999", &[(31, "20250101")]);
        let err = m.apply_update(&parse_y_text(&text).unwrap()).unwrap_err();
        assert_eq!(
            err,
            MasterError::UnknownCode {
                line: 2,
                code: "699999999".into(),
                kind: want_kind
            }
        );
        assert_eq!(
            m.record("620000167").unwrap().price.as_deref(),
            Some("9.80")
        );
    }
    // 3 on a code already present.
    let (mut m, _) = fixture_master();
    let new = y_fixture("y_20240906_cut.csv");
    let err = m.apply_update(&new).unwrap_err();
    assert_eq!(
        err,
        MasterError::DuplicateCode {
            line: 3,
            code: "670000167".into()
        }
    );
    // A code deleted earlier in the same file is unknown afterwards.
    let (mut m, _) = fixture_master();
    let text = y_row("1", "620006781", &[]) + &y_row("5", "620006781", &[(12, "1.00")]);
    assert!(matches!(
        m.apply_update(&parse_y_text(&text).unwrap()),
        Err(MasterError::UnknownCode { line: 2, .. })
    ));
    assert!(m.record("620006781").is_some(), "nothing applied");
    // 9 without its date.
    let err = m
        .apply_update(&parse_y_text(&y_row("9", "620006781", &[])).unwrap())
        .unwrap_err();
    assert!(matches!(err, MasterError::MissingColumn { column: 31, .. }));
}

// ---------------------------------------------------------------------------------------------
// Ingredient lists and moieties

#[test]
fn ingredient_lists_parse() {
    let yakka =
        Ingredients::parse_yakka_list(&fixture_text("mhlw_yakka_list_20250716_cut.csv")).unwrap();
    assert_eq!(yakka.len(), 121);
    assert_eq!(yakka["2590018F2026"], "シルデナフィルクエン酸塩");
    let ippan =
        Ingredients::parse_ippan_master(&fixture_text("ippan_master_20250814_cut.csv")).unwrap();
    assert_eq!(ippan.len(), 67);
    assert_eq!(ippan["2139005F1ZZZ"], "フロセミド");
    // A missing header column is an error naming the line.
    assert!(matches!(
        Ingredients::parse_yakka_list("区分,コード,成分名\n内用薬,1,x\n"),
        Err(MasterError::Syntax { line: 1, .. })
    ));
    assert!(matches!(
        Ingredients::parse_yakka_list("薬価基準収載医薬品コード,成分名\n123,x\n"),
        Err(MasterError::Field {
            line: 2,
            column: 1,
            ..
        })
    ));
}

#[test]
fn moiety_key_on_real_ingredient_names() {
    // 成分名 as written in the MHLW list (2025-07) → the contraindication table's moiety name.
    let table = [
        ("ジクロフェナクナトリウム", "ジクロフェナク"),
        ("アトルバスタチンカルシウム水和物", "アトルバスタチン"),
        ("シルデナフィルクエン酸塩", "シルデナフィル"),
        ("パロキセチン塩酸塩水和物", "パロキセチン"),
        ("エスシタロプラムシュウ酸塩", "エスシタロプラム"),
        ("フルボキサミンマレイン酸塩", "フルボキサミン"),
        ("ゾルピデム酒石酸塩", "ゾルピデム"),
        ("ラサギリンメシル酸塩", "ラサギリン"),
        ("アムロジピンベシル酸塩", "アムロジピン"),
        ("ボノプラザンフマル酸塩", "ボノプラザン"),
        ("スマトリプタンコハク酸塩", "スマトリプタン"),
        ("クロピドグレル硫酸塩", "クロピドグレル"),
        ("エレトリプタン臭化水素酸塩", "エレトリプタン"),
        ("リザトリプタン安息香酸塩", "リザトリプタン"),
        ("エリスロマイシンステアリン酸塩", "エリスロマイシン"),
        ("コデインリン酸塩水和物", "コデイン"),
        ("ワルファリンカリウム", "ワルファリン"),
        ("エソメプラゾールマグネシウム水和物", "エソメプラゾール"),
        ("メルカプトプリン水和物", "メルカプトプリン"),
        (
            "サクビトリルバルサルタンナトリウム水和物",
            "サクビトリルバルサルタン",
        ),
        ("ダルナビル　エタノール付加物", "ダルナビル"),
        ("エンシトレルビル　フマル酸", "エンシトレルビル"),
        (
            "ダビガトランエテキシラートメタンスルホン酸塩",
            "ダビガトラン",
        ),
        ("チメピジウム臭化物水和物", "チメピジウム"),
        ("ロキサチジン酢酸エステル塩酸塩", "ロキサチジン酢酸エステル"),
        // Names that end in a salt word legitimately stay whole.
        ("塩化カリウム", "塩化カリウム"),
        ("炭酸水素ナトリウム", "炭酸水素ナトリウム"),
        ("酸化マグネシウム", "酸化マグネシウム"),
        ("硫酸マグネシウム水和物", "硫酸マグネシウム"),
        ("硝酸イソソルビド", "硝酸イソソルビド"),
        ("一硝酸イソソルビド", "一硝酸イソソルビド"),
        ("乳酸", "乳酸"),
        ("ナトリウム", "ナトリウム"),
    ];
    for (name, key) in table {
        assert_eq!(moiety_key(name), key, "{name}");
    }
    assert_eq!(
        moieties_of("アムロジピンベシル酸塩・アトルバスタチンカルシウム水和物"),
        ["アムロジピン", "アトルバスタチン"]
    );
    assert_eq!(
        moieties_of(
            "エルビテグラビル・コビシスタット・エムトリシタビン・テノホビル　アラフェナミドフマル酸塩"
        ),
        [
            "エルビテグラビル",
            "コビシスタット",
            "エムトリシタビン",
            "テノホビルアラフェナミド"
        ]
    );
}

/// Seed products (seed_drugs.csv) whose ingredient the contraindication table names: (YJ code,
/// receipt code, the table's moiety names). Matched on the English names, independently of
/// `moiety_key`; the two seed products absent from the 2024 y-master are left out.
const SEED_MOIETIES: &[(&str, &str, &[&str])] = &[
    ("2590018F2026", "628700702", &["シルデナフィル"]),
    ("2190028F1021", "620006781", &["シルデナフィル"]),
    ("2590016F7029", "628711002", &["タダラフィル"]),
    ("2590016F2027", "622306501", &["タダラフィル"]),
    ("2190030F1029", "621954301", &["タダラフィル"]),
    ("2171018K1039", "620004541", &["ニトログリセリン"]),
    ("2171701S2037", "620335601", &["ニトログリセリン"]),
    ("2171016F1015", "620005794", &["硝酸イソソルビド"]),
    ("2171011G1123", "620002110", &["硝酸イソソルビド"]),
    ("2171023F2020", "612170717", &["一硝酸イソソルビド"]),
    ("2171017F2024", "612170456", &["ニコランジル"]),
    ("2190034F2023", "622302001", &["リオシグアト"]),
    ("1124007F2026", "611120055", &["トリアゾラム"]),
    ("1124017F4049", "611170008", &["ジアゼパム"]),
    ("1190016F1024", "621985801", &["ラメルテオン"]),
    ("1190023F2020", "622374301", &["スボレキサント"]),
    ("1190027F2029", "622703201", &["レンボレキサント"]),
    ("6290004M1029", "616290177", &["イトラコナゾール"]),
    ("6179001F1023", "620002493", &["ボリコナゾール"]),
    ("6290002M2026", "616290165", &["フルコナゾール"]),
    ("6179002H1029", "622784301", &["ポサコナゾール"]),
    ("6290003X1039", "620007077", &["ミコナゾール"]),
    ("6149003F2038", "616140105", &["クラリスロマイシン"]),
    ("6141004F2042", "620000021", &["エリスロマイシン"]),
    ("6250011F1024", "622054801", &["リトナビル"]),
    ("6164001M1216", "621127501", &["リファンピシン"]),
    ("1179039F1036", "610432019", &["フルボキサミン"]),
    ("1179041G1020", "622135901", &["パロキセチン"]),
    ("1179046F1028", "620003481", &["セルトラリン"]),
    ("1179054F1022", "622069502", &["エスシタロプラム"]),
    ("1169010F2020", "620005364", &["セレギリン"]),
    ("1169017F2021", "622624401", &["ラサギリン"]),
    ("1149038F1024", "622366101", &["トラマドール"]),
    ("1179061F2029", "622794801", &["ルラシドン"]),
    ("1249010F1026", "611240378", &["チザニジン"]),
    ("6241008F2020", "616290156", &["シプロフロキサシン"]),
    ("2189011F1025", "612180263", &["シンバスタチン"]),
    ("2189015F2020", "610443014", &["アトルバスタチン"]),
    ("2189017F1022", "620002477", &["ロスバスタチン"]),
    ("2189016F2024", "620000423", &["ピタバスタチン"]),
    ("2189020M1023", "622516701", &["ロミタピド"]),
    ("3999004M4028", "610443019", &["シクロスポリン"]),
    ("3999014M1022", "613990096", &["タクロリムス"]),
    (
        "6250113F1021",
        "622579201",
        &["グレカプレビル", "ピブレンタスビル"],
    ),
    ("3332001F1016", "613330003", &["ワルファリン"]),
    ("3999031F1035", "622184501", &["イグラチモド"]),
    ("3160002M2028", "610407141", &["メナテトレノン"]),
    ("3339003F2020", "622068401", &["リバーロキサバン"]),
    ("3399011F2023", "622472301", &["チカグレロル"]),
    ("3949003F2020", "622057301", &["フェブキソスタット"]),
    ("3943001F1314", "610463077", &["アロプリノール"]),
    ("3999005F1016", "620006560", &["アザチオプリン"]),
    ("4221001B1052", "620008778", &["メルカプトプリン"]),
    ("3999016M1021", "610432016", &["メトトレキサート"]),
    ("3941001F1077", "621973601", &["コルヒチン"]),
    ("2329022H1043", "610443071", &["オメプラゾール"]),
    ("2329023F1020", "610462010", &["ランソプラゾール"]),
    ("2329028F1023", "610412202", &["ラベプラゾール"]),
    ("2329029M2023", "622080801", &["エソメプラゾール"]),
    ("2329030F2027", "622404501", &["ボノプラザン"]),
    ("6250036F1024", "622149101", &["リルピビリン"]),
    ("1147002F1560", "620007096", &["ジクロフェナク"]),
    ("1149402A1013", "622748900", &["ケトプロフェン"]),
    ("2144002F2020", "612140444", &["エナラプリル"]),
    ("2190041F2023", "622821001", &["サクビトリルバルサルタン"]),
    ("2149045F2025", "620005825", &["エプレレノン"]),
    ("2133001F1522", "620004915", &["スピロノラクトン"]),
    ("1149109F1034", "621499601", &["エルゴタミン"]),
    ("2160003F1022", "610451012", &["スマトリプタン"]),
    ("2160006F1026", "620000419", &["リザトリプタン"]),
    ("6250030F4026", "622403501", &["ダルナビル"]),
    ("6250109F1025", "622507701", &["コビシスタット"]),
    ("6250052F1023", "628785801", &["エンシトレルビル"]),
    ("3339001M2020", "622043401", &["ダビガトラン"]),
    ("2129010F1022", "612120358", &["アミオダロン"]),
    ("1179052M1022", "621978201", &["デュロキセチン"]),
    ("1179040F2132", "620009124", &["ミルナシプラン"]),
    ("1179051F1029", "621932101", &["ミルタザピン"]),
    ("1179002F1017", "611170801", &["アミトリプチリン"]),
    ("1169018F1020", "622696101", &["サフィナミド"]),
    ("2160005F1021", "610462006", &["エレトリプタン"]),
    ("2160004F1027", "610451019", &["ゾルミトリプタン"]),
    ("3949004F1036", "622266201", &["トピロキソスタット"]),
    ("2123008F1048", "612120016", &["プロプラノロール"]),
    ("2133002M1062", "620006051", &["トリアムテレン"]),
    ("2149049F2023", "622670201", &["エサキセレノン"]),
    ("2190044F1020", "622911101", &["フィネレノン"]),
    ("1190028D1026", "622793601", &["メラトニン"]),
    ("1124401A1052", "620003228", &["ミダゾラム"]),
    ("3160002M1021", "613150128", &["メナテトレノン"]),
    ("1179055N2028", "622449601", &["ベンラファキシン"]),
    ("1174006F1019", "611170790", &["イミプラミン"]),
    ("2160007F1020", "620006771", &["ナラトリプタン"]),
    (
        "6290100F2115",
        "621148901",
        &["スルファメトキサゾール", "トリメトプリム"],
    ),
    ("2149047F1028", "621932501", &["アリスキレン"]),
    ("3229001X1010", "612130296", &["塩化カリウム"]),
    ("8211400A1014", "628512804", &["ペチジン"]),
];

#[test]
fn seed_products_resolve_to_the_contraindication_moieties() {
    assert!(SEED_MOIETIES.len() >= 90);
    let ing = fixture_ingredients();
    for (yj, receipt, want) in SEED_MOIETIES {
        let name = ing
            .resolve(Some(yj), None)
            .unwrap_or_else(|| panic!("{yj} ({receipt}): no 成分名"));
        let got = moieties_of(name);
        for w in *want {
            assert!(got.iter().any(|g| g == w), "{yj} {name}: {got:?} lacks {w}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Products

#[test]
fn products_resolve_by_receipt_yj_and_generic_code() {
    let cat = fixture_catalog();
    let viagra = cat.by_receipt("628700702").unwrap();
    assert_eq!(viagra.name, "バイアグラ錠５０ｍｇ");
    assert_eq!(viagra.moieties, ["シルデナフィル"]);
    assert_eq!(viagra.route, Some(Route::Oral));
    assert_eq!(viagra.class, "2590");
    assert!(viagra.current);
    // Brand and generic share the moiety; so does the other-indication brand (class 2190).
    let generic = cat.by_receipt("622867701").unwrap();
    let revatio = cat.by_receipt("620006781").unwrap();
    assert_eq!(generic.moieties, viagra.moieties);
    assert_eq!(revatio.moieties, viagra.moieties);
    assert_eq!(revatio.class, "2190");
    // A "(選)" 67-code resolves through its original (column 41); both share the YJ code.
    let sel = cat.by_receipt("670000167").unwrap();
    assert_eq!(sel.moieties, ["フロセミド"]);
    let same_yj: Vec<String> = cat
        .by_yj("2139005F1052")
        .into_iter()
        .map(|p| p.receipt_code)
        .collect();
    assert_eq!(same_yj, ["620000167", "670000167"]);
    // Abolished products stay resolvable, marked not current.
    let triazolam = cat.by_receipt("610412126").unwrap();
    assert!(!triazolam.current);
    assert_eq!(triazolam.moieties, ["トリアゾラム"]);
    // Injection route from YJ digits 5-7.
    assert_eq!(
        cat.by_receipt("620003458").unwrap().route,
        Some(Route::Injection)
    );
    // Inorganic salt stays whole.
    assert_eq!(
        cat.by_receipt("612130296").unwrap().moieties,
        ["塩化カリウム"]
    );
    // Pseudo-products: no YJ code, no route, no moiety.
    let pseudo = cat.by_receipt("630010001").unwrap();
    assert_eq!((pseudo.route, pseudo.moieties.len()), (None, 0));
    // Generic-name code → moieties + route.
    let g = cat.by_generic("2325003B2ZZZ").unwrap();
    assert_eq!(g.moieties, ["ファモチジン"]);
    assert_eq!(g.route, Some(Route::Oral));
    assert_eq!(
        cat.by_generic("1147002F1ZZZ").unwrap().moieties,
        ["ジクロフェナク"]
    );
    assert!(cat.by_generic("0000000X0ZZZ").is_none());
    assert!(cat.by_receipt("699999999").is_none());
}

// ---------------------------------------------------------------------------------------------
// The full published files (only when RXGATE_MASTERS is set)

fn masters_dir() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("RXGATE_MASTERS")?);
    Some(if p.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    } else {
        p
    })
}

#[test]
fn the_shipped_master_is_the_current_one() {
    // Timed: read and gunzip, parse, apply the 23 updates, read both ingredient lists.
    let t = Instant::now();
    let (cat, report) = rxgate::master_files::load(None).unwrap();
    let loaded = t.elapsed();
    let products: Vec<Product> = cat.products().collect();
    let current = products.iter().filter(|p| p.current).count();
    let usable = cat
        .master()
        .records()
        .filter(|r| r.is_usable_on(20250814))
        .count();
    let no_moiety = products
        .iter()
        .filter(|p| p.current && !p.yj_code.is_empty() && p.moieties.is_empty())
        .count();
    let mut total = UpdateSummary::default();
    for (_, s) in &report.updates {
        total.added += s.added;
        total.changed += s.changed;
        total.abolished += s.abolished;
        total.deleted += s.deleted;
        total.restored += s.restored;
        total.continued += s.continued;
    }
    println!(
        "shipped master: {} records, {current} current, {usable} usable on 2025-08-14, \
         {no_moiety} current with a YJ code but no moiety; updates {total:?}; loaded in {loaded:?}",
        products.len()
    );
    assert_eq!(report.updates.len(), 23);
    // The published files, when given, load to the same master.
    match masters_dir() {
        Some(dir) => {
            let (_, published) = rxgate::master_files::load(Some(&dir)).unwrap();
            assert_eq!(published.updates.len(), report.updates.len());
            assert_eq!(
                (published.records, published.current),
                (report.records, report.current)
            );
        }
        None => println!("RXGATE_MASTERS not set: the published files were not compared"),
    }
    assert_eq!(
        total,
        UpdateSummary {
            added: 1496,
            changed: 2765,
            abolished: 659,
            deleted: 0,
            restored: 0,
            continued: 0
        }
    );
    assert_eq!(products.len(), 19_686 + 1496);
    assert_eq!(current, 20_523);
    assert!(no_moiety < 250, "{no_moiety}");

    // 剤形 and YJ digits 5-7 agree on the route for every product that has both.
    for r in cat.master().records() {
        if let (Some(yj), Some(route)) = (
            r.yj_code.as_deref(),
            r.dosage_form.and_then(Route::from_dosage_form),
        ) {
            assert_eq!(Route::from_yj(yj), Some(route), "{}", r.receipt_code);
        }
    }

    // Seed products by receipt code → the contraindication table's moieties.
    for (yj, receipt, want) in SEED_MOIETIES {
        let p = cat
            .by_receipt(receipt)
            .unwrap_or_else(|| panic!("{receipt} not in the master"));
        assert_eq!(&p.yj_code, yj, "{receipt}");
        for w in *want {
            assert!(
                p.moieties.iter().any(|m| m == w),
                "{receipt}: {:?} lacks {w}",
                p.moieties
            );
        }
    }
    // A "(選)" 67-code from y_20240906.csv resolves to its original's moiety.
    let sel = cat.by_receipt("670000167").unwrap();
    assert!(sel.name.ends_with("（選）"));
    assert_eq!(sel.moieties, ["フロセミド"]);
    let lipitor_sel = cat
        .by_yj("2189015F2020")
        .into_iter()
        .find(|p| p.receipt_code.starts_with("67"));
    if let Some(p) = lipitor_sel {
        assert_eq!(p.moieties, ["アトルバスタチン"]);
    }
    // Every 67-code has its original in the master and shares its moieties.
    for r in cat.master().records() {
        if let Some(orig) = r.original_code() {
            let (a, b) = (
                cat.by_receipt(&r.receipt_code).unwrap(),
                cat.by_receipt(orig).unwrap(),
            );
            assert_eq!(a.moieties, b.moieties, "{}", r.receipt_code);
        }
    }
    // Every moiety the table names is covered by SEED_MOIETIES unless no seed product has it.
    let shipped_table = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/clinical/contraindications_structured.csv");
    let table_path = if shipped_table.exists() {
        shipped_table
    } else if let Some(dir) = masters_dir() {
        dir.join("../clinical/contraindications_structured.csv")
    } else {
        println!("no contraindication table: its moieties were not checked");
        return;
    };
    let table = String::from_utf8(std::fs::read(table_path).unwrap()).unwrap();
    let not_in_seed = ["エファビレンツ", "タペンタドール", "バルデナフィル"];
    // Seed rows the seed itself marks as absent from the 2024 y-master (オーラップ 611170064,
    // レイアタッツ with no receipt code).
    let absent = ["ピモジド", "アタザナビル"];
    assert!(cat.by_receipt("611170064").is_none());
    let rows = parse_csv(&table).unwrap();
    for (_, f) in &rows[1..] {
        for name in [&f[1], &f[3]] {
            for part in name.split('・') {
                let covered = SEED_MOIETIES.iter().any(|(_, _, w)| w.contains(&part));
                assert!(
                    covered || not_in_seed.contains(&part) || absent.contains(&part),
                    "{part}"
                );
            }
        }
    }
}
