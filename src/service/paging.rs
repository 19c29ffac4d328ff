//! Keyset paging of lists ordered by id: page size and position parsed from a request,
//! and the next page's token.

use uuid::Uuid;

use crate::{domain::paging, error::Violations};

/// Page size and keyset position of a list ordered by id, parsed from a request.
pub(crate) struct Page {
    /// Rows per page.
    pub size: u64,
    /// Id of the last row of the previous page.
    pub after: Option<Uuid>,
    fingerprint: String,
}

impl Page {
    /// Parses `page_size` and `page_token` of a query described by `query`, recording
    /// bad values in `v`.
    pub(crate) fn parse(
        v: &mut Violations,
        page_size: i32,
        page_token: &str,
        query: &[&str],
    ) -> Page {
        let size = v
            .check("page_size", paging::page_size(page_size))
            .unwrap_or(paging::DEFAULT_PAGE_SIZE);
        let fingerprint = paging::fingerprint(query);
        let cursor = v
            .check("page_token", paging::decode(page_token, &fingerprint))
            .flatten();
        let after = cursor.and_then(|c| match Uuid::parse_str(&c.id) {
            Ok(id) => Some(id),
            Err(_) => {
                v.add("page_token", "is not a page token issued by this service");
                None
            }
        });
        Page {
            size,
            after,
            fingerprint,
        }
    }

    /// Rows to fetch: one more than a page, to learn whether another page follows.
    pub(crate) fn limit(&self) -> u64 {
        self.size + 1
    }

    /// Cuts `rows` (fetched with [`Page::limit`]) to the page; returns the next token.
    pub(crate) fn finish<T>(&self, rows: &mut Vec<T>, id: impl Fn(&T) -> Uuid) -> String {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let more = rows.len() > size;
        rows.truncate(size);
        match rows.last() {
            Some(last) if more => paging::encode(&paging::Cursor {
                q: self.fingerprint.clone(),
                k: None,
                id: id(last).to_string(),
            }),
            _ => String::new(),
        }
    }
}

/// [`Page::finish`] for lists in another order than by id: cuts `rows` (fetched with one
/// row more than `size`) to the page and returns the next token, which carries the last
/// row's sort key and id as given by `position`.
pub(crate) fn finish_keyed<T>(
    rows: &mut Vec<T>,
    size: u64,
    fingerprint: &str,
    position: impl Fn(&T) -> (String, Uuid),
) -> String {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let more = rows.len() > size;
    rows.truncate(size);
    match rows.last() {
        Some(last) if more => {
            let (key, id) = position(last);
            paging::encode(&paging::Cursor {
                q: fingerprint.to_owned(),
                k: Some(key),
                id: id.to_string(),
            })
        }
        _ => String::new(),
    }
}

/// Parses `order_by`: one of `keys`' names, optionally followed by `asc` (the default)
/// or `desc`; empty means `default` (key, descending). Anything else is reported on
/// `order_by` and the default is used.
pub(crate) fn parse_order<K: Copy>(
    v: &mut Violations,
    text: &str,
    keys: &[(&str, K)],
    default: (K, bool),
) -> (K, bool) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (field, direction) = match words.as_slice() {
        [] => return default,
        [field] => (*field, None),
        [field, direction] => (*field, Some(direction.to_ascii_lowercase())),
        _ => ("", None),
    };
    let key = keys
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, k)| *k);
    let descending = match direction.as_deref() {
        None | Some("asc") => Some(false),
        Some("desc") => Some(true),
        _ => None,
    };
    match (key, descending) {
        (Some(key), Some(descending)) => (key, descending),
        _ => {
            let names: Vec<String> = keys.iter().map(|(name, _)| format!("`{name}`")).collect();
            let listed = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            v.add(
                "order_by",
                format!("must be {listed}, optionally followed by `asc` or `desc`"),
            );
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[(&str, u8)] = &[("create_time", 1), ("issue_time", 2), ("number", 3)];

    #[test]
    fn order_by_takes_a_key_and_a_direction_or_the_default() {
        let mut v = Violations::new();
        assert_eq!(parse_order(&mut v, "", KEYS, (1, true)), (1, true));
        assert_eq!(parse_order(&mut v, "number", KEYS, (1, true)), (3, false));
        assert_eq!(
            parse_order(&mut v, "issue_time DESC", KEYS, (1, true)),
            (2, true)
        );
        assert_eq!(
            parse_order(&mut v, " number  asc ", KEYS, (1, true)),
            (3, false)
        );
        assert!(v.finish().is_ok());
    }

    #[test]
    fn a_bad_order_by_names_the_choices() {
        for text in ["slug", "number sideways", "number asc extra"] {
            let mut v = Violations::new();
            assert_eq!(parse_order(&mut v, text, KEYS, (1, true)), (1, true));
            let message = format!("{:?}", v.finish().expect_err("refused"));
            assert!(
                message.contains(
                    "must be `create_time`, `issue_time` or `number`, optionally followed by `asc` or `desc`"
                ),
                "{message}"
            );
        }
        let mut v = Violations::new();
        parse_order(&mut v, "name", &[("create_time", ())], ((), true));
        let message = format!("{:?}", v.finish().expect_err("refused"));
        assert!(
            message.contains("must be `create_time`, optionally"),
            "{message}"
        );
    }
}
