//! The active-moiety key: a 成分名 split into its ingredients, each normalised (NFKC, spaces
//! removed, hydrate, salt and prodrug suffixes stripped) so that products of one active moiety
//! compare equal. Pure: takes `&str`; no IO, no clock, no tonic/prost/store engine; knows no
//! master file.

/// Splits a 成分名 into its ingredients (joined with ・) and normalises each to its moiety key.
pub fn moieties_of(ingredient_name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in ingredient_name.split('・') {
        let key = moiety_key(part);
        if !key.is_empty() && !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// Hydrate and solvate words removed from the end of a name (with a numeral prefix: 一水和物).
const HYDRATES: &[&str] = &["水和物", "水加物", "エタノール付加物"];

/// Salt suffixes removed from the end of a name: the acid part of "X…酸塩" and the quaternary
/// "X…化物". Derived from the 成分名 column of the MHLW list (2025-07): every "…酸塩" ending that
/// occurs there after a katakana moiety name. The longest match wins (ステアリン酸塩, not リン酸塩).
const ACID_SALTS: &[&str] = &[
    "塩酸塩",
    "二塩酸塩",
    "硫酸塩",
    "一硫酸塩",
    "硝酸塩",
    "臭化水素酸塩",
    "ヨウ化水素酸塩",
    "リン酸塩",
    "酢酸塩",
    "乳酸塩",
    "クエン酸塩",
    "マレイン酸塩",
    "酒石酸塩",
    "メシル酸塩",
    "ベシル酸塩",
    "トシル酸塩",
    "エシル酸塩",
    "フマル酸塩",
    "コハク酸塩",
    "シュウ酸塩",
    "グルコン酸塩",
    "安息香酸塩",
    "キシナホ酸塩",
    "パモ酸塩",
    "ヒベンズ酸塩",
    "フェンジゾ酸塩",
    "メタンスルホン酸塩",
    "エタンスルホン酸塩",
    "イセチオン酸塩",
    "リンゴ酸塩",
    "ステアリン酸塩",
    "ラクトビオン酸塩",
    "サリチル酸塩",
    "ジサリチル酸塩",
    "オレイン酸塩",
    "臭化物",
    "塩化物",
    "ヨウ化物",
    // Co-crystal former written after a space (エンシトレルビル　フマル酸).
    "フマル酸",
];

/// Cation suffixes ("X ナトリウム").
const CATIONS: &[&str] = &[
    "ナトリウム",
    "カルシウム",
    "カリウム",
    "マグネシウム",
    "メグルミン",
];

/// Prodrug ester groups the contraindication table leaves out of the moiety name
/// (ダビガトランエテキシラート → ダビガトラン).
const PRODRUG_GROUPS: &[&str] = &["エテキシラート"];

const NUMERALS: [char; 11] = [
    '一', '二', '三', '四', '五', '六', '七', '八', '九', '十', '半',
];

fn is_katakana(c: char) -> bool {
    ('\u{30a1}'..='\u{30fa}').contains(&c) || c == 'ー'
}

/// The longest suffix of `s` that can be stripped, and what remains.
fn strip_one(s: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for suffix in HYDRATES
        .iter()
        .chain(ACID_SALTS)
        .chain(CATIONS)
        .chain(PRODRUG_GROUPS)
    {
        let Some(rest) = s.strip_suffix(suffix) else {
            continue;
        };
        let hydrate = HYDRATES.contains(suffix);
        let rest = if hydrate {
            rest.trim_end_matches(NUMERALS)
        } else {
            rest
        };
        let ends_katakana = rest.chars().last().is_some_and(is_katakana);
        // A salt word is stripped only after a katakana moiety name (so 塩化カリウム, 炭酸水素
        // ナトリウム, 酸化マグネシウム stay whole); a hydrate after anything (硫酸マグネシウム水和物).
        let ok = rest.chars().count() >= 2 && (ends_katakana || hydrate);
        if ok && best.is_none_or(|(len, _)| suffix.len() > len) {
            best = Some((suffix.len(), rest));
        }
    }
    best.map(|(_, rest)| rest)
}

/// The normalised active-moiety key of one ingredient name: NFKC, spaces removed, then hydrate,
/// salt and prodrug suffixes stripped repeatedly (アトルバスタチンカルシウム水和物 → アトルバスタチン,
/// ドネペジル塩酸塩 → ドネペジル). A salt suffix is stripped only when a katakana moiety name of at
/// least two characters remains, so names that legitimately end in such a word (塩化カリウム,
/// 炭酸水素ナトリウム, 硝酸イソソルビド) stay whole.
pub fn moiety_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut s: String = name.nfkc().filter(|c| !c.is_whitespace()).collect();
    while let Some(rest) = strip_one(&s) {
        let keep = rest.len();
        s.truncate(keep);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moiety_key_keeps_inorganic_and_prefix_names() {
        for (name, key) in [
            ("塩化カリウム", "塩化カリウム"),
            ("炭酸水素ナトリウム", "炭酸水素ナトリウム"),
            ("酸化マグネシウム", "酸化マグネシウム"),
            ("硝酸イソソルビド", "硝酸イソソルビド"),
            ("ジクロフェナクナトリウム", "ジクロフェナク"),
            ("アトルバスタチンカルシウム水和物", "アトルバスタチン"),
            ("シルデナフィルクエン酸塩", "シルデナフィル"),
        ] {
            assert_eq!(moiety_key(name), key, "{name}");
        }
    }
}
