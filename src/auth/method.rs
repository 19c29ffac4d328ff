//! Known RPCs by gRPC path: an index over the policy table built once, so the auth
//! layer and the telemetry layer find a call's row with one hash lookup instead of a
//! scan of the whole table.

use std::{
    collections::HashMap,
    fmt,
    hash::{Hash, Hasher},
    sync::OnceLock,
};

use crate::auth::policy::{POLICY, Rule};

/// One row of the policy table with its gRPC path.
struct Entry {
    path: Box<str>,
    rule: &'static Rule,
}

static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
static BY_PATH: OnceLock<HashMap<&'static str, Method>> = OnceLock::new();

/// A known tenantry RPC: a row of the policy table, found by its path with one hash
/// lookup. Cheap to copy, hash and compare (by identity), so it serves as a metric label.
#[derive(Clone, Copy)]
pub struct Method(&'static Entry);

impl Method {
    /// The RPC served at `path` (`/tenantry.v1.Service/Method`), if the policy table
    /// knows it.
    pub fn lookup(path: &str) -> Option<Method> {
        BY_PATH
            .get_or_init(|| {
                ENTRIES
                    .get_or_init(|| {
                        POLICY
                            .iter()
                            .map(|rule| Entry {
                                path: format!("/{}/{}", rule.service, rule.method).into(),
                                rule,
                            })
                            .collect()
                    })
                    .iter()
                    .map(|entry| (&*entry.path, Method(entry)))
                    .collect()
            })
            .get(path)
            .copied()
    }

    /// Its row in the policy table.
    pub fn rule(self) -> &'static Rule {
        self.0.rule
    }

    /// `tenantry.v1.Service/Method`, as in the span name and the `method` label.
    pub fn name(self) -> &'static str {
        self.0.path.strip_prefix('/').unwrap_or(&self.0.path)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Method {}

impl Hash for Method {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(self.0, state);
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_found_by_path_only_when_known() {
        let get = Method::lookup("/tenantry.v1.OrganizationService/GetOrganization")
            .expect("a known method");
        assert_eq!(
            get.name(),
            "tenantry.v1.OrganizationService/GetOrganization"
        );
        assert_eq!(get.rule().method, "GetOrganization");
        let again = Method::lookup("/tenantry.v1.OrganizationService/GetOrganization");
        assert_eq!(again, Some(get));
        assert!(Method::lookup("/tenantry.v1.OrganizationService/Nope").is_none());
        assert!(Method::lookup("tenantry.v1.OrganizationService/GetOrganization").is_none());
        for rule in POLICY {
            let path = format!("/{}/{}", rule.service, rule.method);
            let method = Method::lookup(&path).expect("every policy row");
            assert!(std::ptr::eq(method.rule(), rule));
        }
    }
}
