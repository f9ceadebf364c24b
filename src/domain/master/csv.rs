//! RFC 4180 CSV, as the SSK y-file, the MHLW lists and the contraindication table are
//! published: records of fields, each with the line it starts on. Pure: takes `&str`; no IO, no
//! clock, no tonic/prost/store engine; knows no master file's columns.

use super::error::MasterError;

/// Splits RFC 4180 CSV text into records of fields. Quoted fields may hold commas, doubled quotes
/// and line breaks; records end at LF or CRLF. Returns each record with its 1-based line number.
/// A blank final line is not a record.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, MasterError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while chars.peek().is_some() {
        let start_line = line;
        let mut record = Vec::new();
        loop {
            let mut field = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Err(MasterError::Syntax {
                                line: start_line,
                                msg: "unterminated quoted field".into(),
                            });
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                match chars.peek() {
                    None | Some(',') | Some('\r') | Some('\n') => {}
                    Some(c) => {
                        return Err(MasterError::Syntax {
                            line,
                            msg: format!("unexpected {c:?} after a closing quote"),
                        });
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if matches!(c, ',' | '\r' | '\n') {
                        break;
                    }
                    if c == '"' {
                        return Err(MasterError::Syntax {
                            line,
                            msg: "quote inside an unquoted field".into(),
                        });
                    }
                    field.push(c);
                    chars.next();
                }
            }
            record.push(field);
            match chars.next() {
                Some(',') => continue,
                Some('\r') => {
                    if chars.next() != Some('\n') {
                        return Err(MasterError::Syntax {
                            line,
                            msg: "CR not followed by LF".into(),
                        });
                    }
                    line += 1;
                    break;
                }
                Some('\n') => {
                    line += 1;
                    break;
                }
                None => break,
                Some(_) => unreachable!("fields stop only at a separator"),
            }
        }
        out.push((start_line, record));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_and_line_ends() {
        let rows = parse_csv("\"a\",\"b,c\",\"d\"\"e\"\r\nx,,\"y\nz\"\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (1, vec!["a".into(), "b,c".into(), "d\"e".into()]));
        assert_eq!(rows[1], (2, vec!["x".into(), "".into(), "y\nz".into()]));
    }

    #[test]
    fn csv_errors_name_the_line() {
        assert!(matches!(
            parse_csv("a\n\"b"),
            Err(MasterError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            parse_csv("a\n\"b\"c"),
            Err(MasterError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            parse_csv("a\nb\"c"),
            Err(MasterError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            parse_csv("a\rb"),
            Err(MasterError::Syntax { line: 1, .. })
        ));
    }
}
