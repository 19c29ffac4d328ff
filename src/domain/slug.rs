//! Organization slugs: URL-safe, lowercase, immutable, never reused.

use std::fmt;

/// Longest slug.
pub const MAX_LEN: usize = 63;

/// A valid slug: `^[a-z0-9]+(-[a-z0-9]+)*$`, 1–63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

/// Why a string is not a slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSlug(&'static str);

impl fmt::Display for BadSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Slug {
    /// Parses a caller-supplied slug.
    pub fn parse(text: &str) -> Result<Self, BadSlug> {
        if text.is_empty() {
            return Err(BadSlug("must not be empty"));
        }
        if text.len() > MAX_LEN {
            return Err(BadSlug("must be at most 63 characters"));
        }
        let well_formed = text.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !well_formed {
            return Err(BadSlug(
                "must be lowercase letters and digits in groups joined by single hyphens",
            ));
        }
        Ok(Slug(text.to_owned()))
    }

    /// Generates a slug from a name: transliterates to ASCII, lowercases, turns every run
    /// of other characters into one `-`, trims, and cuts to 63 characters.
    /// A name with nothing usable gives `org`.
    pub fn generate(name: &str) -> Self {
        let ascii = deunicode::deunicode(name).to_ascii_lowercase();
        let mut out = String::with_capacity(ascii.len());
        let mut pending_hyphen = false;
        for c in ascii.chars() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                if pending_hyphen && !out.is_empty() {
                    out.push('-');
                }
                pending_hyphen = false;
                out.push(c);
            } else {
                pending_hyphen = true;
            }
        }
        let cut = truncate(&out, MAX_LEN);
        if cut.is_empty() {
            Slug("org".to_owned())
        } else {
            Slug(cut.to_owned())
        }
    }

    /// This slug with a numeric suffix (`-2`, `-3`…), cut so the result stays ≤ 63.
    pub fn with_suffix(&self, n: u32) -> Self {
        let suffix = format!("-{n}");
        let base = truncate(&self.0, MAX_LEN - suffix.len());
        Slug(format!("{base}{suffix}"))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Cuts an ASCII slug to at most `max` characters without a trailing hyphen.
fn truncate(slug: &str, max: usize) -> &str {
    let cut = if slug.len() > max { &slug[..max] } else { slug };
    cut.trim_end_matches('-')
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_the_seed_slugs() {
        assert_eq!(Slug::generate("AgenticMail").as_str(), "agenticmail");
        assert_eq!(Slug::generate("Acme Corp").as_str(), "acme-corp");
        assert_eq!(
            Slug::generate("  Café — Crème & Co. ").as_str(),
            "cafe-creme-co"
        );
        assert_eq!(Slug::generate("!!!").as_str(), "org");
    }

    #[test]
    fn generated_slugs_are_valid_and_short() {
        let long = "Word ".repeat(40);
        let slug = Slug::generate(&long);
        assert!(slug.as_str().len() <= MAX_LEN);
        assert!(Slug::parse(slug.as_str()).is_ok());
        let suffixed = slug.with_suffix(12);
        assert!(suffixed.as_str().len() <= MAX_LEN);
        assert!(Slug::parse(suffixed.as_str()).is_ok());
    }

    #[test]
    fn parse_rejects_malformed_slugs() {
        for bad in [
            "",
            "Acme",
            "acme--corp",
            "-acme",
            "acme-",
            "acme corp",
            "ácme",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Slug::parse("acme-corp-2").is_ok());
    }
}
