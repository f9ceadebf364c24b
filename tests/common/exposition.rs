//! A strict reader of the Prometheus text exposition format (version 0.0.4), for the tests of
//! `/metrics`: every line is empty, a comment, a well-formed `# HELP` or `# TYPE` line, or a
//! sample whose name, labels (with only the escapes `\\`, `\"` and `\n`) and value are well
//! formed. Anything else is an error naming the line, which is what a scraper would reject.
//! (The `prometheus-parse` crate was not used: it reads labels with a regular expression that
//! accepts unescaped quotes, so it cannot tell a broken page from a good one.) Depends on nothing
//! of rxgate.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of the label `name`, if the sample has it.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a page, or the first line that does not follow the format.
pub(crate) fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (number, line) in text.split('\n').enumerate() {
        let checked = if line.is_empty() {
            Ok(None)
        } else if let Some(comment) = line.strip_prefix('#') {
            comment_line(comment).map(|()| None)
        } else {
            sample_line(line).map(Some)
        };
        match checked {
            Ok(sample) => samples.extend(sample),
            Err(why) => return Err(format!("line {}: {why}: {line:?}", number + 1)),
        }
    }
    Ok(samples)
}

fn comment_line(comment: &str) -> Result<(), String> {
    let mut words = comment.trim_start_matches(' ').splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("HELP"), Some(name), Some(help)) => {
            metric_name(name)?;
            escapes(help, &['\\', 'n'])
        }
        (Some("HELP"), ..) => Err("HELP without a name and a text".into()),
        (Some("TYPE"), Some(name), Some(kind)) => {
            metric_name(name)?;
            match kind {
                "counter" | "gauge" | "histogram" | "summary" | "untyped" => Ok(()),
                _ => Err(format!("unknown type {kind:?}")),
            }
        }
        (Some("TYPE"), ..) => Err("TYPE without a name and a type".into()),
        _ => Ok(()),
    }
}

/// Checks that every backslash of `text` starts one of the escapes allowed.
fn escapes(text: &str, allowed: &[char]) -> Result<(), String> {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && !chars.next().is_some_and(|e| allowed.contains(&e)) {
            return Err("a backslash that starts no escape".into());
        }
    }
    Ok(())
}

fn metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn sample_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .ok_or("a name without a value")?;
    let name = &line[..name_end];
    metric_name(name)?;
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(after_brace) => label_set(after_brace)?,
        None => (Vec::new(), &line[name_end..]),
    };
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = fields.next().ok_or("no value")?;
    let value: f64 = value.parse().map_err(|_| format!("bad value {value:?}"))?;
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(timestamp), None) if timestamp.parse::<i64>().is_ok() => {}
        _ => return Err("bad timestamp or trailing text".into()),
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

type Labels = Vec<(String, String)>;

/// The labels after a `{`, and the text after the closing `}`.
fn label_set(mut rest: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after_name) = rest.split_once("=\"").ok_or("a label without =\"")?;
        let name_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(format!("bad label name {name:?}"));
        }
        let (value, after_value) = label_value(after_name)?;
        labels.push((name.to_owned(), value));
        rest = match after_value.strip_prefix(',') {
            Some(next) => next,
            None if after_value.starts_with('}') => after_value,
            None => return Err("a label value not followed by , or }".into()),
        };
    }
}

/// An escaped label value up to its closing quote, and the text after the quote.
fn label_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                _ => return Err("a backslash that starts no escape".into()),
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value".into())
}
