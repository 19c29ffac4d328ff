//! Validated text: names, emails and bounded free text.

/// Checks a display name: trimmed, 1..=`max` characters, no control characters.
pub fn name(text: &str, max: usize) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    bounded(trimmed, max).map(str::to_owned)
}

/// Checks optional free text: at most `max` characters, no control characters except
/// newlines and tabs.
pub fn bounded(text: &str, max: usize) -> Result<&str, String> {
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err("must not contain control characters".into());
    }
    Ok(text)
}

/// Checks an email address and returns it lowercased. Deliberately simple: one `@`, a
/// non-empty local part, a dotted domain, no spaces, at most 254 characters.
/// Lowercased before the checks: lowercasing can lengthen text (`İ` → `i̇`), and the
/// stored address must pass them too.
pub fn email(text: &str) -> Result<String, String> {
    let text = text.trim().to_lowercase();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > 254 {
        return Err("must be at most 254 characters".into());
    }
    let Some((local, domain)) = text.split_once('@') else {
        return Err("must be an email address like name@example.com".into());
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '@' && c != '"');
    if !domain_ok || !local_ok {
        return Err("must be an email address like name@example.com".into());
    }
    Ok(text)
}

/// Checks an optional email: empty stays empty.
pub fn optional_email(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Ok(String::new())
    } else {
        email(text)
    }
}

/// Most characters of client input an error quotes.
pub const MAX_QUOTED_CHARS: usize = 64;

/// `text` cut to at most `max` characters (on a char boundary), with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// Client input quoted as `{:?}` would, cut to `MAX_QUOTED_CHARS` characters with `…`,
/// so an error never echoes unbounded input.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email("Ope@AgenticMail.com").unwrap(), "ope@agenticmail.com");
        for bad in [
            "",
            "x",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "@c.com",
            "a@.com",
            "a@c..com",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(name("", 100).is_err());
        assert!(name("   ", 100).is_err());
        assert!(name(&"x".repeat(101), 100).is_err());
        assert!(name("a\u{0}b", 100).is_err());
        assert_eq!(name("  Acme  ", 100).unwrap(), "Acme");
    }
}
