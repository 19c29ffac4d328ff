//! A small subset of AIP-160 filters: terms `field OP value` joined by `AND`, where OP
//! is `=`, `>=` or `<`, and a value is a bare word or a double-quoted string.

/// Comparison of one term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// Every comparison: for times, months and other ordered values.
pub const ORDERED: &[Op] = &[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge];

/// Equality and inequality: for names, ids and states.
pub const EQUALITY: &[Op] = &[Op::Eq, Op::Ne];

/// One `field OP value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Field name.
    pub field: String,
    /// Comparison.
    pub op: Op,
    /// Value, unquoted.
    pub value: String,
}

/// Longest filter accepted.
pub const MAX_FILTER_LEN: usize = 1024;

/// Parses a filter into terms, checking every field against `allowed` (field, ops).
pub fn parse(text: &str, allowed: &[(&str, &[Op])]) -> Result<Vec<Term>, String> {
    if text.len() > MAX_FILTER_LEN {
        return Err(format!("must be at most {MAX_FILTER_LEN} characters"));
    }
    let tokens = tokenize(text)?;
    let mut terms = Vec::new();
    let mut rest = tokens.as_slice();
    while !rest.is_empty() {
        let [field, op, value, tail @ ..] = rest else {
            return Err("must be terms like `field = value` joined by AND".into());
        };
        let Token::Word(field) = field else {
            return Err("must start each term with a field name".into());
        };
        let op = match op {
            Token::Op(op) => *op,
            _ => return Err(format!("expected =, !=, <, <=, > or >= after `{field}`")),
        };
        let value = match value {
            Token::Word(v) | Token::Quoted(v) => v.clone(),
            Token::Op(_) => return Err(format!("missing value for `{field}`")),
        };
        let Some((_, ops)) = allowed.iter().find(|(name, _)| name == field) else {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown field `{field}`; filterable fields: {}",
                names.join(", ")
            ));
        };
        if !ops.contains(&op) {
            return Err(format!("operator not supported for `{field}`"));
        }
        terms.push(Term {
            field: field.clone(),
            op,
            value,
        });
        rest = match tail {
            [] => &[],
            [Token::Word(and), more @ ..]
                if and.eq_ignore_ascii_case("AND") && !more.is_empty() =>
            {
                more
            }
            _ => return Err("terms must be joined by AND".into()),
        };
    }
    Ok(terms)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(Op),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                tokens.push(Token::Op(Op::Eq));
            }
            '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err("expected != after !".into());
                }
                tokens.push(Token::Op(Op::Ne));
            }
            '>' | '<' => {
                chars.next();
                let or_equal = chars.next_if_eq(&'=').is_some();
                tokens.push(Token::Op(match (c, or_equal) {
                    ('>', true) => Op::Ge,
                    ('>', false) => Op::Gt,
                    (_, true) => Op::Le,
                    (_, false) => Op::Lt,
                }));
            }
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped) => value.push(quotable(escaped)?),
                            None => return Err("unterminated string".into()),
                        },
                        Some(other) => value.push(quotable(other)?),
                        None => return Err("unterminated string".into()),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            c if c.is_alphanumeric() || "_-.:+".contains(c) => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_alphanumeric() || "_-.:+".contains(c) {
                        word.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

/// Refuses control characters in quoted values: they are never stored, and
/// PostgreSQL text cannot hold NUL.
fn quotable(c: char) -> Result<char, String> {
    if c.is_control() {
        Err("must not contain control characters".into())
    } else {
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[(&str, &[Op])] = &[
        ("status", &[Op::Eq]),
        ("prefix", &[Op::Eq]),
        ("create_time", &[Op::Ge, Op::Lt]),
    ];

    #[test]
    fn parses_conjunctions() {
        let terms = parse(r#"status = ACTIVE AND prefix = "acme corp""#, FIELDS).unwrap();
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[1].value, "acme corp");
        assert!(parse("", FIELDS).unwrap().is_empty());
        assert_eq!(
            parse("create_time >= 2026-01-01T00:00:00Z", FIELDS).unwrap()[0].op,
            Op::Ge
        );
        let ops: Vec<Op> = parse(
            "t = 1 AND t != 2 AND t < 3 AND t <= 4 AND t > 5 AND t >= 6",
            &[("t", ORDERED)],
        )
        .unwrap()
        .into_iter()
        .map(|t| t.op)
        .collect();
        assert_eq!(ops, vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge]);
    }

    #[test]
    fn rejects_hostile_or_unknown_input() {
        for bad in [
            "status",
            "status =",
            "nope = 1",
            "status = A OR prefix = b",
            "status = 'x'; DROP TABLE",
            "status > 1",
            "status ! 1",
            "create_time => 1",
            "prefix = \"open",
            "prefix = \"a\u{0}b\"",
            "prefix = \"a\\\u{0}b\"",
            "prefix = \"a\u{1b}b\"",
            "prefix = a\u{0}b",
        ] {
            assert!(parse(bad, FIELDS).is_err(), "{bad:?}");
        }
    }
}
