//! The plan and add-on catalogue: built-in defaults, or a TOML/YAML file given with
//! `--catalogue` (checked at start; every problem is reported with its path in the
//! file). Plan and add-on ids are catalogue keys such as `pro` or `priority_support`.
//!
//! File shape (TOML; YAML has the same keys):
//!
//! ```toml
//! [[plans]]
//! id = "pro"
//! name = "Pro"
//! tier_rank = 30            # unique; a higher rank is an upgrade
//! description = "For growing teams"
//! default_features = ["webhooks", "priority_support"]
//! prices = { USD = { month = "29.00", year = "290.00" } }   # none = custom-priced
//! limits = { max_agents = 10, max_logs_per_month = 50000 } # absent = unlimited
//!
//! [[addons]]
//! id = "premium_ai_models"
//! name = "Premium AI models"
//! category = "ai_models"
//! charge_type = "monthly"   # or "one_time"
//! prices = { USD = "99.00" }
//! terms = { version = "2026-01", title = "...", text = "...", url = "", effective_time = "2026-01-01T00:00:00Z" }
//! ```
//!
//! The file is the whole plan list and must contain a `free` plan (organizations
//! without a subscription are on it). When the file has no `addons` key the built-in
//! add-ons stay; `addons = []` means none.

use std::{collections::BTreeMap, path::Path, str::FromStr};

use serde::Deserialize;

use crate::domain::{
    money::{self, Currency},
    org::stored_enum,
};

/// The plan every organization without a live subscription is on.
pub const FREE_PLAN: &str = "free";

stored_enum! {
    /// How often a subscription renews.
    Interval { Month => "MONTH", Year => "YEAR" }
}

impl Interval {
    /// Months in one period.
    pub fn months(self) -> u32 {
        match self {
            Interval::Month => 1,
            Interval::Year => 12,
        }
    }

    /// How invoices and messages name the interval: "monthly", "annual".
    pub fn adjective(self) -> &'static str {
        match self {
            Interval::Month => "monthly",
            Interval::Year => "annual",
        }
    }
}

stored_enum! {
    /// How an add-on is charged.
    ChargeType { OneTime => "ONE_TIME", Monthly => "MONTHLY" }
}

/// Limits of a plan; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Agents assigned at once.
    pub max_agents: Option<i64>,
    /// LOGS usage per month.
    pub max_logs_per_month: Option<i64>,
    /// Days logs are kept.
    pub log_retention_days: Option<i64>,
    /// Members of the organization, owner included.
    pub max_team_members: Option<i64>,
    /// Organizations an account may have (an agency's tenants; a user's own orgs).
    pub max_organizations: Option<i64>,
}

impl PlanLimits {
    /// No limit at all (the root organization).
    pub const UNLIMITED: PlanLimits = PlanLimits {
        max_agents: None,
        max_logs_per_month: None,
        log_retention_days: None,
        max_team_members: None,
        max_organizations: None,
    };
}

/// A plan's recurring price for one currency and interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanPrice {
    /// Currency.
    pub currency: Currency,
    /// Interval.
    pub interval: Interval,
    /// Price per interval, micro-units (a whole number of minor units).
    pub micros: i64,
}

/// A plan of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Catalogue key.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Order of plans: a higher rank is an upgrade; unique.
    pub tier_rank: i32,
    /// Description.
    pub description: String,
    /// Prices (empty for custom-priced plans).
    pub prices: Vec<PlanPrice>,
    /// Limits.
    pub limits: PlanLimits,
    /// Feature flags granted by default, sorted.
    pub default_features: Vec<String>,
}

impl Plan {
    /// The price for `currency` and `interval`, micro-units; `None` when the plan is not
    /// sold that way.
    pub fn price(&self, currency: Currency, interval: Interval) -> Option<i64> {
        self.prices
            .iter()
            .find(|p| p.currency == currency && p.interval == interval)
            .map(|p| p.micros)
    }

    /// Whether the plan has any price in `currency`.
    pub fn priced_in(&self, currency: Currency) -> bool {
        self.prices.iter().any(|p| p.currency == currency)
    }
}

/// A service's terms at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// Version, e.g. "2026-01".
    pub version: String,
    /// Title.
    pub title: String,
    /// Full text.
    pub text: String,
    /// Where published (may be empty).
    pub url: String,
    /// Since when this version applies, micros.
    pub effective_time: i64,
}

/// An add-on service of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    /// Catalogue key.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Category, e.g. "support".
    pub category: String,
    /// Description.
    pub description: String,
    /// Unit price per currency, micro-units.
    pub prices: Vec<(Currency, i64)>,
    /// One-time or monthly.
    pub charge_type: ChargeType,
    /// Terms to accept before purchase, if any.
    pub terms: Option<Terms>,
}

impl Addon {
    /// The unit price in `currency`, micro-units.
    pub fn price(&self, currency: Currency) -> Option<i64> {
        self.prices
            .iter()
            .find(|(c, _)| *c == currency)
            .map(|(_, m)| *m)
    }
}

/// The catalogue: plans by ascending tier rank, add-ons by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    /// Plans by ascending tier rank.
    pub plans: Vec<Plan>,
    /// Add-on services by id.
    pub addons: Vec<Addon>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::builtin()
    }
}

impl Catalogue {
    /// A plan by id.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// The free plan (always present).
    pub fn free(&self) -> &Plan {
        self.plan(FREE_PLAN).unwrap_or(&self.plans[0])
    }

    /// An add-on by id.
    pub fn addon(&self, id: &str) -> Option<&Addon> {
        self.addons.iter().find(|a| a.id == id)
    }

    /// Plan `id`, or the free plan for an unknown id (an organization whose plan left
    /// the catalogue is treated as free).
    pub fn plan_or_free(&self, id: &str) -> &Plan {
        self.plan(id).unwrap_or_else(|| self.free())
    }

    /// The limits of plan `id` (the free plan's for an unknown id).
    pub fn limits(&self, id: &str) -> PlanLimits {
        self.plan_or_free(id).limits
    }

    /// The effective flags of an organization on plan `plan_id` with `overrides` (see
    /// [`effective_features`]).
    pub fn features(&self, plan_id: &str, overrides: &Overrides) -> Vec<String> {
        effective_features(&self.plan_or_free(plan_id).default_features, overrides)
    }

    /// The built-in catalogue.
    pub fn builtin() -> Catalogue {
        let file: CatalogueFile = match toml::from_str(BUILTIN) {
            Ok(file) => file,
            Err(e) => unreachable!("the built-in catalogue parses: {e}"),
        };
        match file.check() {
            Ok(catalogue) => catalogue,
            Err(e) => unreachable!("the built-in catalogue is valid: {e}"),
        }
    }

    /// Loads and checks a catalogue file (`.toml`, `.yaml` or `.yml`).
    pub fn load(path: &Path) -> Result<Catalogue, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("catalogue {}: {e}", path.display()))?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        Catalogue::parse(&text, yaml).map_err(|e| format!("catalogue {}: {e}", path.display()))
    }

    /// Parses and checks catalogue text (TOML, or YAML when `yaml`).
    pub fn parse(text: &str, yaml: bool) -> Result<Catalogue, String> {
        let file: CatalogueFile = if yaml {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string())?
        };
        file.check()
    }
}

/// Per-organization feature flag overrides, stored as a JSON object flag → enabled.
pub type Overrides = BTreeMap<String, bool>;

/// Reads stored overrides (an unreadable value counts as none).
pub fn parse_overrides(json: &str) -> Overrides {
    serde_json::from_str(json).unwrap_or_default()
}

/// Effective flags: the plan's defaults, plus overrides that add a flag, minus
/// overrides that remove one; sorted.
pub fn effective_features(defaults: &[String], overrides: &Overrides) -> Vec<String> {
    let mut flags: std::collections::BTreeSet<String> = defaults.iter().cloned().collect();
    for (flag, enabled) in overrides {
        if *enabled {
            flags.insert(flag.clone());
        } else {
            flags.remove(flag);
        }
    }
    flags.into_iter().collect()
}

// ---------------------------------------------------------------------------
// The file format and its checks
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    plans: Vec<PlanFile>,
    addons: Option<Vec<AddonFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    id: String,
    name: String,
    tier_rank: i32,
    #[serde(default)]
    description: String,
    #[serde(default)]
    prices: BTreeMap<String, PriceFile>,
    #[serde(default)]
    limits: PlanLimits,
    #[serde(default)]
    default_features: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    month: Option<String>,
    year: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddonFile {
    id: String,
    name: String,
    category: String,
    #[serde(default)]
    description: String,
    prices: BTreeMap<String, String>,
    charge_type: String,
    terms: Option<TermsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsFile {
    version: String,
    title: String,
    text: String,
    #[serde(default)]
    url: String,
    effective_time: Option<String>,
}

/// Collected problems, each `path: message`.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, path: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }
}

/// Checks a catalogue key (plan, add-on or category id): `^[a-z][a-z0-9_]{0,63}$`.
pub fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("is required");
    }
    let ok = key.len() <= 64
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (!ok).then_some("must be a catalogue key matching ^[a-z][a-z0-9_]{0,63}$")
}

fn check_key(p: &mut Problems, path: &str, key: &str) {
    if let Some(problem) = key_problem(key) {
        p.add(path, format!("{key:?} {problem}"));
    }
}

fn check_text(p: &mut Problems, path: &str, text: &str, max: usize, required: bool) {
    if required && text.trim().is_empty() {
        p.add(path, "is required");
    } else if text.chars().count() > max {
        p.add(path, format!("must be at most {max} characters"));
    }
}

/// An amount of `currency`: at least zero (more than zero unless `zero_ok`), with at
/// most the currency's minor digits.
fn amount(p: &mut Problems, path: &str, text: &str, currency: Currency, zero_ok: bool) -> i64 {
    match money::parse_amount(text, currency.minor_digits(), false) {
        Ok(value) if value.is_zero() && !zero_ok => {
            p.add(path, "must be more than zero");
            0
        }
        Ok(value) => money::to_micros(value),
        Err(e) => {
            p.add(path, format!("{text:?} {e}"));
            0
        }
    }
}

fn currency(p: &mut Problems, path: &str, code: &str) -> Option<Currency> {
    match Currency::from_str(code) {
        Ok(c) => Some(c),
        Err(_) => {
            p.add(path, format!("unknown currency {code:?}"));
            None
        }
    }
}

impl PlanFile {
    fn check(self, p: &mut Problems, at: &str) -> Plan {
        check_key(p, &format!("{at}.id"), &self.id);
        check_text(p, &format!("{at}.name"), &self.name, 100, true);
        check_text(
            p,
            &format!("{at}.description"),
            &self.description,
            1000,
            false,
        );
        let mut prices = Vec::new();
        for (code, price) in &self.prices {
            let path = format!("{at}.prices.{code}");
            let Some(cur) = currency(p, &path, code) else {
                continue;
            };
            if price.month.is_none() && price.year.is_none() {
                p.add(&path, "needs a month or a year price");
            }
            for (interval, text) in [
                (Interval::Month, &price.month),
                (Interval::Year, &price.year),
            ] {
                if let Some(text) = text {
                    let field = format!("{path}.{}", interval.as_str().to_lowercase());
                    prices.push(PlanPrice {
                        currency: cur,
                        interval,
                        micros: amount(p, &field, text, cur, true),
                    });
                }
            }
        }
        let l = &self.limits;
        for (name, value) in [
            ("max_agents", l.max_agents),
            ("max_logs_per_month", l.max_logs_per_month),
            ("log_retention_days", l.log_retention_days),
            ("max_team_members", l.max_team_members),
            ("max_organizations", l.max_organizations),
        ] {
            if value.is_some_and(|v| !(0..=i64::from(i32::MAX)).contains(&v)) {
                p.add(format!("{at}.limits.{name}"), "must be 0 to 2147483647");
            }
        }
        let mut features = self.default_features.clone();
        for (i, flag) in features.iter().enumerate() {
            check_flag(p, &format!("{at}.default_features[{i}]"), flag);
        }
        features.sort();
        features.dedup();
        Plan {
            id: self.id,
            name: self.name.trim().to_owned(),
            tier_rank: self.tier_rank,
            description: self.description,
            prices,
            limits: self.limits,
            default_features: features,
        }
    }
}

/// Checks a feature flag name: `^[a-z][a-z0-9_.-]{0,63}$`.
pub fn flag_problem(flag: &str) -> Option<&'static str> {
    let ok = !flag.is_empty()
        && flag.len() <= 64
        && flag.starts_with(|c: char| c.is_ascii_lowercase())
        && flag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    (!ok).then_some("must match ^[a-z][a-z0-9_.-]{0,63}$")
}

fn check_flag(p: &mut Problems, path: &str, flag: &str) {
    if let Some(problem) = flag_problem(flag) {
        p.add(path, format!("{flag:?} {problem}"));
    }
}

impl AddonFile {
    fn check(self, p: &mut Problems, at: &str) -> Addon {
        check_key(p, &format!("{at}.id"), &self.id);
        check_text(p, &format!("{at}.name"), &self.name, 200, true);
        check_key(p, &format!("{at}.category"), &self.category);
        check_text(
            p,
            &format!("{at}.description"),
            &self.description,
            1000,
            false,
        );
        let charge_type = self
            .charge_type
            .to_ascii_uppercase()
            .parse::<ChargeType>()
            .unwrap_or_else(|_| {
                p.add(
                    format!("{at}.charge_type"),
                    format!("{:?} must be one_time or monthly", self.charge_type),
                );
                ChargeType::OneTime
            });
        if self.prices.is_empty() {
            p.add(format!("{at}.prices"), "needs at least one currency");
        }
        let mut prices = Vec::new();
        for (code, text) in &self.prices {
            let path = format!("{at}.prices.{code}");
            if let Some(cur) = currency(p, &path, code) {
                prices.push((cur, amount(p, &path, text, cur, false)));
            }
        }
        let terms = self.terms.map(|t| {
            let path = format!("{at}.terms");
            check_text(p, &format!("{path}.version"), &t.version, 64, true);
            check_text(p, &format!("{path}.title"), &t.title, 200, true);
            check_text(p, &format!("{path}.text"), &t.text, 100_000, true);
            check_text(p, &format!("{path}.url"), &t.url, 2000, false);
            let effective_time = match &t.effective_time {
                None => 0,
                Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
                    Ok(at) => at.timestamp_micros(),
                    Err(e) => {
                        p.add(format!("{path}.effective_time"), format!("{text:?}: {e}"));
                        0
                    }
                },
            };
            Terms {
                version: t.version.trim().to_owned(),
                title: t.title,
                text: t.text,
                url: t.url,
                effective_time,
            }
        });
        Addon {
            id: self.id,
            name: self.name.trim().to_owned(),
            category: self.category,
            description: self.description,
            prices,
            charge_type,
            terms,
        }
    }
}

impl CatalogueFile {
    fn check(self) -> Result<Catalogue, String> {
        let mut p = Problems::default();
        if self.plans.is_empty() {
            p.add("plans", "needs at least one plan");
        }
        let mut plans: Vec<Plan> = self
            .plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| plan.check(&mut p, &format!("plans[{i}]")))
            .collect();
        for (i, plan) in plans.iter().enumerate() {
            if plans[..i].iter().any(|o| o.id == plan.id) {
                p.add(
                    format!("plans[{i}].id"),
                    format!("{:?} appears twice", plan.id),
                );
            }
            if plans[..i].iter().any(|o| o.tier_rank == plan.tier_rank) {
                p.add(
                    format!("plans[{i}].tier_rank"),
                    format!("{} is used by another plan", plan.tier_rank),
                );
            }
        }
        if !plans.iter().any(|plan| plan.id == FREE_PLAN) {
            p.add("plans", "needs a plan with id \"free\"");
        }
        let addons = match self.addons {
            None => builtin_addons(),
            Some(list) => {
                let addons: Vec<Addon> = list
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| a.check(&mut p, &format!("addons[{i}]")))
                    .collect();
                for (i, addon) in addons.iter().enumerate() {
                    if addons[..i].iter().any(|o| o.id == addon.id) {
                        p.add(
                            format!("addons[{i}].id"),
                            format!("{:?} appears twice", addon.id),
                        );
                    }
                }
                addons
            }
        };
        if !p.0.is_empty() {
            return Err(p.0.join("; "));
        }
        plans.sort_by_key(|plan| plan.tier_rank);
        let mut addons = addons;
        addons.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Catalogue { plans, addons })
    }
}

fn builtin_addons() -> Vec<Addon> {
    Catalogue::builtin().addons
}

/// The built-in catalogue: `config/catalogue.toml`, the example operators start from.
const BUILTIN: &str = include_str!("../../config/catalogue.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalogue_has_the_six_plans_by_rank() {
        let c = Catalogue::builtin();
        let ids: Vec<&str> = c.plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            ["free", "basic", "pro", "team", "business", "enterprise"]
        );
        let pro = c.plan("pro").expect("pro");
        assert_eq!(pro.price(Currency::Usd, Interval::Month), Some(29_000_000));
        assert_eq!(pro.limits.max_agents, Some(10));
        assert_eq!(c.plan("enterprise").map(|p| p.prices.len()), Some(0));
        assert!(
            c.addon("premium_ai_models")
                .is_some_and(|a| a.terms.is_some())
        );
    }

    #[test]
    fn a_bad_file_reports_every_problem_with_its_path() {
        let text = r#"
[[plans]]
id = "Pro"
name = ""
tier_rank = 1
prices = { USD = { month = "9.999" }, XYZ = { month = "1" } }
limits = { max_agents = -1 }
[[plans]]
id = "basic"
name = "Basic"
tier_rank = 1
"#;
        let err = Catalogue::parse(text, false).expect_err("invalid");
        for needle in [
            "plans[0].id",
            "plans[0].name: is required",
            "plans[0].prices.USD.month",
            "unknown currency \"XYZ\"",
            "plans[0].limits.max_agents",
            "plans[1].tier_rank: 1 is used",
            "needs a plan with id \"free\"",
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
    }

    #[test]
    fn yaml_and_toml_read_the_same() {
        let yaml = "plans:\n  - id: free\n    name: Free\n    tier_rank: 0\n    prices: { USD: { month: \"0\" } }\naddons: []\n";
        let c = Catalogue::parse(yaml, true).expect("yaml");
        assert_eq!(c.plans.len(), 1);
        assert!(c.addons.is_empty());
        let toml = "addons = []\n[[plans]]\nid = \"free\"\nname = \"Free\"\ntier_rank = 0\nprices = { USD = { month = \"0\" } }\n";
        assert_eq!(Catalogue::parse(toml, false).expect("toml"), c);
    }
}
