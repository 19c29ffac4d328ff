//! Property tests for the request conversions and validators of the public API: slugs,
//! money, filters, page tokens, TypeIDs, bounded text, JWT verification, API keys,
//! request ids, billing months and the proto ⇄ domain conversions.
//!
//! Why proptest and not cargo-fuzz: only the stable toolchain exists here and in CI, and
//! cargo-fuzz (libFuzzer) needs nightly. proptest runs on stable inside `cargo test`,
//! shrinks failures to a minimal input and is bounded by a case count per property, so
//! "run for a bounded time in CI" is this binary under `cargo test --test properties`
//! (well under a minute in debug). Failure persistence is off so a run never writes
//! files; a failure prints its minimal input, which belongs in a unit test.
//!
//! Each property has a default case count (the whole file runs in a few seconds in
//! debug); `PROPTEST_CASES=N` raises every one of them for a longer campaign, e.g.
//! `PROPTEST_CASES=10000 cargo test --test properties` (about a minute).
//!
//! Every property asserts a meaningful outcome (round trip, exact acceptance rule,
//! rejection, invariant), and never-panicking is implied by each call returning. Some
//! reproduce bugs they found (amounts past 28 decimals, e-mail case folding, NUL in
//! filters and page tokens), fixed since.
//!
//! Not public, so tested only through the server (`tests/api/hostile.rs`): the header
//! parsing of credentials (`auth::layer::credential`), `service::paging::Page` and
//! `parse_order` (the cursor-id check and `order_by` parsing).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use proptest::prelude::*;
use rust_decimal::Decimal;
use sea_orm::{DbBackend, EntityTrait, QueryFilter, QueryTrait};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenantry::{
    auth::{api_key, jwt},
    domain::{
        billing::{self, Month},
        filter::{self, EQUALITY, ORDERED, Op},
        ids::{self, IdKind},
        money::{self, Currency, MAX_AMOUNT_UNITS, Money},
        org::{MemberRole, OrgKind, OrgStatus},
        paging::{self, Cursor},
        plans,
        slug::{self, Slug},
        text,
    },
    error::Violations,
    grpc::convert,
    proto,
    service::{
        billing::{Sign, money_in},
        filtering::compare,
        orgs::escape_like,
    },
    storage::{entities::audit_entries, idempotency::Key},
};

/// `n` cases per property, or `PROPTEST_CASES` when set (for longer runs).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings a hostile caller would send: any chars (control characters included), SQL and
/// filter metacharacters, and a fixed corpus of classics.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..48).prop_map(String::from_iter),
        "[a-zA-Z0-9 _=<>!\"'\\\\;%()*.:+\t\n-]{0,48}",
        prop::sample::select(CORPUS).prop_map(str::to_owned),
    ]
}

const CORPUS: &[&str] = &[
    "",
    "'; DROP TABLE organizations; --",
    "name = 'x' OR 1=1",
    "\" OR \"1\"=\"1",
    "1e999",
    "NaN",
    "-0",
    "inf",
    "0.0000001",
    "99999999999999999999",
    "\u{0}",
    "a\u{0}b",
    "ａｃｍｅ",
    "аcme",
    "\u{202e}emca",
    "%_\\",
    "../../etc/passwd",
    "🦀",
];

/// The slug grammar, written independently of `Slug::parse`.
fn is_slug(s: &str) -> bool {
    (1..=slug::MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn slug_parse_accepts_exactly_the_grammar(s in prop_oneof![hostile(), "[a-z0-9-]{0,70}"]) {
        let parsed = Slug::parse(&s);
        prop_assert_eq!(parsed.is_ok(), is_slug(&s), "{:?}", s);
        if let Ok(slug) = parsed {
            prop_assert_eq!(slug.as_str(), s.as_str());
        }
    }

    #[test]
    fn generated_and_suffixed_slugs_are_valid_and_stable(name in hostile(), n in any::<u32>()) {
        let slug = Slug::generate(&name);
        prop_assert!(is_slug(slug.as_str()), "{:?} -> {:?}", name, slug);
        prop_assert_eq!(&Slug::generate(slug.as_str()), &slug, "generate is idempotent");
        let suffixed = slug.with_suffix(n);
        prop_assert!(is_slug(suffixed.as_str()), "{:?}", suffixed);
        let tail = format!("-{n}");
        prop_assert!(suffixed.as_str().ends_with(&tail));
    }

    #[test]
    fn amounts_round_trip_through_micros_and_text(
        micros in -MAX_AMOUNT_UNITS * 1_000_000..=MAX_AMOUNT_UNITS * 1_000_000,
        currency in prop::sample::select(Currency::ALL.to_vec()),
    ) {
        let value = Money::from_micros(currency, micros);
        prop_assert_eq!(value.micros(), micros);
        let shown = value.amount_string();
        let decimals = shown.split_once('.').map_or(0, |(_, d)| d.len());
        prop_assert!((2..=6).contains(&decimals), "{}", shown);
        let parsed = money::parse_amount(&shown, 6, true).expect("formatted amounts parse");
        prop_assert_eq!(money::to_micros(parsed), micros);
        let wire = convert::money(value);
        prop_assert_eq!(wire.currency_code.parse::<Currency>(), Ok(currency));
        let back = money::parse_amount(&wire.amount, 6, true).map(money::to_micros);
        prop_assert_eq!(back, Ok(micros));
        let negative_refused = money::parse_amount(&shown, 6, false).is_err();
        prop_assert_eq!(negative_refused, micros < 0);
    }

    #[test]
    fn accepted_amounts_obey_sign_scale_and_bounds(
        s in prop_oneof![hostile(), "[-+]?[0-9]{0,16}(\\.[0-9]{0,9})?(e[0-9]{1,3})?"],
        max_scale in 0u32..=6,
        allow_negative in any::<bool>(),
    ) {
        if let Ok(amount) = money::parse_amount(&s, max_scale, allow_negative) {
            prop_assert!(s.len() <= 32 && !s.is_empty());
            prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b)), "{:?}", s);
            prop_assert!(amount.normalize().scale() <= max_scale, "{:?}", s);
            prop_assert!(amount.abs() <= Decimal::from(MAX_AMOUNT_UNITS));
            prop_assert!(allow_negative || amount >= Decimal::ZERO, "{:?}", s);
            prop_assert_eq!(money::from_micros(money::to_micros(amount)), amount.normalize());
        }
    }

    #[test]
    fn nan_like_and_out_of_range_amounts_are_refused(
        digits in "[1-9][0-9]{0,8}",
        exponent in "[eE][-+]?[0-9]{1,3}",
        extra in 1u32..=15,
    ) {
        for s in ["NaN", "nan", "inf", "-inf", "Infinity", "1e999", "0x10", " 1", "1 ", "1,5"] {
            prop_assert!(money::parse_amount(s, 6, true).is_err(), "{:?}", s);
        }
        let scientific = format!("{digits}{exponent}");
        prop_assert!(money::parse_amount(&scientific, 6, true).is_err());
        // More decimals than allowed (ending in a non-zero digit) is refused at any scale.
        let precise = format!("0.{}{digits}1", "0".repeat(5 + extra as usize));
        prop_assert!(money::parse_amount(&precise, 6, true).is_err(), "{:?}", precise);
        let over = format!("{}{digits}", MAX_AMOUNT_UNITS);
        prop_assert!(money::parse_amount(&over, 6, true).is_err(), "{:?}", over);
        prop_assert_eq!(money::parse_amount("-0", 2, false), Ok(Decimal::ZERO));
        let negative = format!("-{digits}");
        prop_assert!(money::parse_amount(&negative, 2, false).is_err());
    }

    #[test]
    fn money_in_reports_a_violation_exactly_when_it_returns_nothing(
        code in prop_oneof![Just(String::new()), Just("USD".into()), Just("EUR".into()), hostile()],
        amount in prop_oneof![hostile(), "-?[0-9]{1,14}(\\.[0-9]{1,8})?"],
        sign in prop::sample::select(vec![Sign::Positive, Sign::NonNegative, Sign::Any]),
    ) {
        let mut v = Violations::new();
        let wire = proto::Money { currency_code: code.clone(), amount: amount.clone() };
        let got = money_in(&mut v, "cost", Some(&wire), Currency::Usd, 6, sign);
        prop_assert_eq!(got.is_some(), v.is_empty(), "{:?} {:?}", code, amount);
        if let Some(micros) = got {
            prop_assert!(code.is_empty() || code == "USD");
            let parsed = money::parse_amount(&amount, 6, true).ok().map(money::to_micros);
            prop_assert_eq!(Some(micros), parsed);
            match sign {
                Sign::Positive => prop_assert!(micros > 0),
                Sign::NonNegative => prop_assert!(micros >= 0),
                Sign::Any => {}
            }
        }
    }
}

/// Renders terms as a filter: values double-quoted with `"` and `\` escaped.
fn render(terms: &[(String, Op, String)], and: &str) -> String {
    let op = |op: &Op| match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    };
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    terms
        .iter()
        .map(|(f, o, v)| format!("{f} {} {}", op(o), quoted(v)))
        .collect::<Vec<_>>()
        .join(&format!(" {and} "))
}

const FIELDS: &[(&str, &[Op])] = &[
    ("status", EQUALITY),
    ("create_time", ORDERED),
    ("actor_id", EQUALITY),
];

fn term() -> impl Strategy<Value = (String, Op, String)> {
    prop_oneof![
        (Just("status"), prop::sample::select(EQUALITY.to_vec())),
        (Just("actor_id"), prop::sample::select(EQUALITY.to_vec())),
        (Just("create_time"), prop::sample::select(ORDERED.to_vec())),
    ]
    .prop_flat_map(|(f, op)| (Just(f.to_owned()), Just(op), hostile()))
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn filters_round_trip_any_quoted_value(
        terms in prop::collection::vec(term(), 1..4),
        and in prop::sample::select(vec!["AND", "and", "And"]),
    ) {
        let text = render(&terms, and);
        prop_assume!(text.len() <= filter::MAX_FILTER_LEN);
        // Values are storable text: a control character is refused, anything else kept.
        if terms.iter().any(|(_, _, v)| control(v)) {
            prop_assert!(filter::parse(&text, FIELDS).is_err(), "{:?}", text);
        }
        let terms: Vec<(String, Op, String)> =
            terms.into_iter().map(|(f, o, v)| (f, o, strip_control(&v))).collect();
        let text = render(&terms, and);
        let parsed = filter::parse(&text, FIELDS).expect("a rendered filter parses");
        let back: Vec<(String, Op, String)> =
            parsed.into_iter().map(|t| (t.field, t.op, t.value)).collect();
        prop_assert_eq!(back, terms);
    }

    #[test]
    fn filters_refuse_sql_unknown_fields_and_oversize(
        terms in prop::collection::vec(term(), 1..3),
        tail in prop::sample::select(vec![
            " OR 1=1", "; DROP TABLE organizations; --", " ' OR '1'='1", " -- x",
            " /* */", " (", ")", " UNION SELECT 1", " AND", " OR status = \"x\"",
        ]),
        field in "[a-z_]{1,12}",
        junk in hostile(),
    ) {
        let text = render(&terms, "AND");
        prop_assume!(text.len() + tail.len() <= filter::MAX_FILTER_LEN);
        prop_assert!(filter::parse(&format!("{text}{tail}"), FIELDS).is_err(), "{}{}", text, tail);
        prop_assume!(!FIELDS.iter().any(|(f, _)| *f == field));
        let unknown = format!("{field} = x");
        prop_assert!(filter::parse(&unknown, FIELDS).is_err());
        prop_assert!(filter::parse(&"a".repeat(filter::MAX_FILTER_LEN + 1), FIELDS).is_err());
        // Arbitrary text: whatever parses names allowed fields with allowed operators.
        for term in filter::parse(&junk, FIELDS).unwrap_or_default() {
            let (_, ops) = FIELDS.iter().find(|(f, _)| *f == term.field).expect("allowed field");
            prop_assert!(ops.contains(&term.op));
        }
    }

    #[test]
    fn filter_values_reach_sql_only_as_bound_parameters(
        value in hostile(),
        op in prop::sample::select(ORDERED.to_vec()),
    ) {
        let build = |v: &str, backend| {
            audit_entries::Entity::find()
                .filter(compare(audit_entries::Column::ActorId, op, v))
                .build(backend)
        };
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            let hostile = build(&value, backend);
            // The SQL text is the same whatever the value: it only ever travels as a parameter.
            prop_assert_eq!(&hostile.sql, &build("x", backend).sql);
            let bound = hostile.values.expect("bound values").0;
            prop_assert_eq!(bound, vec![sea_orm::Value::String(Some(value.clone()))]);
        }
    }

    #[test]
    fn escaped_like_patterns_hold_no_wildcards(s in hostile()) {
        let escaped = escape_like(&s);
        let mut literal = String::new();
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            prop_assert!(!matches!(c, '%' | '_'), "bare wildcard in {:?}", escaped);
            let escaped_char = if c == '\\' { chars.next() } else { Some(c) };
            prop_assert!(escaped_char.is_some(), "dangling escape in {:?}", escaped);
            literal.extend(escaped_char);
        }
        prop_assert_eq!(literal, s);
    }
}

/// Whether text holds a control character (refused in filter values and page tokens).
fn control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Text without its control characters.
fn strip_control(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (hostile(), prop::option::of(hostile()), hostile()).prop_map(|(q, k, id)| Cursor { q, k, id })
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn page_tokens_round_trip_and_stay_bound_to_their_query(
        c in cursor(),
        other in hostile(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(b"ABCxyz019-_".to_vec()),
    ) {
        let token = paging::encode(&c);
        prop_assume!(token.len() <= 1024);
        // Keys and ids are storable text: a control character marks a forged token.
        if c.k.as_deref().is_some_and(control) || control(&c.id) {
            prop_assert!(paging::decode(&token, &c.q).is_err());
        }
        let c = Cursor { k: c.k.as_deref().map(strip_control), id: strip_control(&c.id), q: c.q };
        let token = paging::encode(&c);
        prop_assert_eq!(paging::decode(&token, &c.q), Ok(Some(c.clone())));
        if other != c.q {
            prop_assert!(paging::decode(&token, &other).is_err());
        }
        // Truncated: every strict non-empty prefix is refused.
        let n = 1 + cut.index(token.len() - 1);
        prop_assert!(paging::decode(&token[..n], &c.q).is_err(), "prefix {}", n);
        // Tampered: either refused, or still bound to the same query.
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = with;
        let tampered = String::from_utf8(bytes).expect("ascii");
        if let Ok(Some(decoded)) = paging::decode(&tampered, &c.q) {
            prop_assert_eq!(decoded.q, c.q);
        }
    }

    #[test]
    fn arbitrary_page_tokens_are_refused_cleanly(
        s in hostile(),
        fp in "[0-9a-f]{16}",
        size in any::<i32>(),
    ) {
        match paging::decode(&s, &fp) {
            Ok(None) => prop_assert!(s.is_empty()),
            Ok(Some(c)) => prop_assert_eq!(&c.q, &fp),
            Err(e) => prop_assert!(!e.is_empty()),
        }
        let long = "A".repeat(1025);
        prop_assert!(paging::decode(&long, &fp).is_err());
        match paging::page_size(size) {
            Ok(n) => prop_assert_eq!(n, if size == 0 { 50 } else { (size as u64).min(500) }),
            Err(_) => prop_assert!(size < 0),
        }
    }

    #[test]
    fn type_ids_round_trip_and_have_one_spelling(
        raw in any::<u128>(),
        kind in id_kind(),
        other in id_kind(),
        s in hostile(),
    ) {
        let id = uuid::Uuid::from_u128(raw);
        let text = ids::encode(kind, id);
        prop_assert_eq!(text.len(), kind.prefix().len() + 27);
        prop_assert_eq!(ids::decode(kind, &text), Ok(id));
        if other != kind {
            prop_assert!(ids::decode(other, &text).is_err());
        }
        prop_assert!(ids::decode(kind, &text.to_uppercase()).is_err());
        // Whatever decodes re-encodes to exactly the same text.
        let candidate = format!("{}_{s}", kind.prefix());
        if let Ok(decoded) = ids::decode(kind, &candidate) {
            prop_assert_eq!(ids::encode(kind, decoded), candidate);
        }
        if let Ok(decoded) = ids::decode(kind, &s) {
            prop_assert_eq!(ids::encode(kind, decoded), s);
        }
    }

    #[test]
    fn type_id_suffixes_in_the_alphabet_decode_only_below_2_pow_128(
        suffix in "[0-9a-hjkmnp-tv-z]{26}",
    ) {
        let text = format!("org_{suffix}");
        let in_range = suffix.as_bytes()[0] <= b'7';
        prop_assert_eq!(ids::decode(IdKind::Organization, &text).is_ok(), in_range, "{}", text);
    }
}

fn id_kind() -> impl Strategy<Value = IdKind> {
    prop::sample::select(vec![
        IdKind::Organization,
        IdKind::Agent,
        IdKind::Member,
        IdKind::Invitation,
        IdKind::Address,
        IdKind::Signup,
        IdKind::Audit,
        IdKind::ApiKey,
        IdKind::Transaction,
        IdKind::Invoice,
        IdKind::BillingRecord,
        IdKind::Subscription,
        IdKind::ServicePurchase,
        IdKind::Agreement,
        IdKind::Event,
        IdKind::WebhookEndpoint,
        IdKind::WebhookDelivery,
        IdKind::Email,
        IdKind::TenantTransfer,
        IdKind::AssetTransfer,
        IdKind::ExternalAsset,
    ])
}

fn forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\t' | '\r')
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn text_bounds_accept_exactly_the_rule(s in hostile(), max in 0usize..40) {
        let clean = !s.chars().any(forbidden_control);
        let fits = s.chars().count() <= max;
        match text::bounded(&s, max) {
            Ok(kept) => prop_assert!(clean && fits && kept == s),
            Err(_) => prop_assert!(!(clean && fits)),
        }
        // Names are checked after trimming (which also drops leading/trailing \u{b}, \u{c}…).
        let trimmed = s.trim();
        let name_ok = !trimmed.is_empty()
            && trimmed.chars().count() <= max
            && !trimmed.chars().any(forbidden_control);
        prop_assert_eq!(text::name(&s, max).ok(), name_ok.then(|| trimmed.to_owned()));
    }

    #[test]
    fn accepted_emails_are_trimmed_lowercase_and_well_formed(
        s in prop_oneof![hostile(), "[ A-Za-z0-9._%+'\"@-]{1,20}@[A-Za-z0-9.-]{1,20}"],
    ) {
        if let Ok(email) = text::email(&s) {
            prop_assert_eq!(&email, &s.trim().to_lowercase());
            prop_assert_eq!(email.matches('@').count(), 1);
            prop_assert!(!email.chars().any(|c| c.is_whitespace() || c.is_control()));
            let (_, domain) = email.split_once('@').expect("one @");
            prop_assert!(domain.contains('.'));
            prop_assert!(!domain.starts_with('.') && !domain.ends_with('.'));
        }
        prop_assert_eq!(text::optional_email("  \t"), Ok(String::new()));
    }

    #[test]
    fn request_ids_are_bounded_and_printable(id in prop_oneof![hostile(), "[a-z]{120,136}"]) {
        let key = Key::new("scope".into(), "tenantry.v1.X/Y", &id, &proto::Money::default());
        let valid = id.len() <= 128 && !id.chars().any(char::is_control);
        match key {
            Ok(None) => prop_assert!(id.is_empty()),
            Ok(Some(key)) => prop_assert!(valid && key.request_id() == id),
            Err(e) => {
                prop_assert!(!valid);
                prop_assert_eq!(e.reason(), "INVALID_ARGUMENT");
            }
        }
    }

    #[test]
    fn months_dates_and_stored_names_have_one_spelling(
        s in prop_oneof![hostile(), "[0-9]{4}-[0-9]{2}(-[0-9]{2})?"],
        year in 2000i32..=9999,
        month in 1u32..=12,
    ) {
        let m: Month = format!("{year:04}-{month:02}").parse().expect("a month in range");
        prop_assert_eq!(m.to_string(), format!("{year:04}-{month:02}"));
        if let Ok(parsed) = s.parse::<Month>() {
            prop_assert_eq!(parsed.to_string(), s.clone());
        }
        if let Ok(date) = billing::parse_date(&s) {
            prop_assert_eq!(date.format("%Y-%m-%d").to_string(), s.clone());
        }
        if let Ok(kind) = s.parse::<OrgKind>() {
            prop_assert_eq!(kind.as_str(), s.as_str());
        }
        if let Ok(status) = s.parse::<OrgStatus>() {
            prop_assert_eq!(status.as_str(), s.as_str());
        }
    }

    #[test]
    fn proto_enums_and_timestamps_convert_both_ways(
        value in any::<i32>(),
        instant in i64::MIN + 1_000_000..=i64::MAX,
        seconds in any::<i64>(),
        nanos in any::<i32>(),
    ) {
        match convert::member_role_from(value) {
            Some(role) => prop_assert_eq!(convert::member_role(role) as i32, value),
            None => prop_assert!(!(1..=5).contains(&value)),
        }
        if let Some(role) = convert::member_role_from(value) {
            prop_assert_eq!(role.as_str().parse::<MemberRole>(), Ok(role));
        }
        match convert::address_kind_from(value) {
            Some(kind) => prop_assert_eq!(convert::address_kind(kind) as i32, value),
            None => prop_assert!(!(1..=3).contains(&value)),
        }
        let ts = convert::timestamp(instant).expect("every instant has a timestamp");
        prop_assert!((0..1_000_000_000).contains(&ts.nanos));
        prop_assert_eq!(convert::micros(&ts), Some(instant));
        let wire = prost_types::Timestamp { seconds, nanos };
        let exact = i128::from(seconds) * 1_000_000 + i128::from(nanos / 1_000);
        let nanos_ok = (0..1_000_000_000).contains(&nanos);
        match convert::micros(&wire) {
            Some(m) => prop_assert!(nanos_ok && i128::from(m) == exact),
            // Refused: bad nanos, or an instant outside i64 micro-seconds (within a
            // second of the limits it may be refused although it would fit).
            None => prop_assert!(!nanos_ok || exact.abs() > i128::from(i64::MAX - 1_000_000)),
        }
    }
}

fn key_grammar(s: &str, extra: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(c))
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn catalogue_keys_and_flag_names_accept_exactly_their_grammar(
        s in prop_oneof![hostile(), "[a-z][a-z0-9_.-]{0,70}"],
    ) {
        prop_assert_eq!(plans::key_problem(&s).is_none(), key_grammar(&s, ""), "{:?}", s);
        prop_assert_eq!(plans::flag_problem(&s).is_none(), key_grammar(&s, ".-"), "{:?}", s);
    }

    /// Filter values and page-token keys are bound as parameters, but PostgreSQL text
    /// cannot hold NUL: what the parsers accept must be storable text.
    #[test]
    fn accepted_filter_values_and_token_keys_hold_no_nul(
        terms in prop::collection::vec(term(), 1..3),
        key in hostile(),
    ) {
        let text = render(&terms, "AND");
        prop_assume!(text.len() <= filter::MAX_FILTER_LEN);
        for term in filter::parse(&text, FIELDS).unwrap_or_default() {
            prop_assert!(!term.value.contains('\0'), "{:?}", term.value);
        }
        let token = paging::encode(&Cursor { q: "q".into(), k: Some(key), id: String::new() });
        if let Ok(Some(cursor)) = paging::decode(&token, "q") {
            prop_assert!(!cursor.k.unwrap_or_default().contains('\0'));
        }
    }
}

const ISSUER: &str = "tenantry";
const SECRET: &[u8] = b"property-secret-of-at-least-32-bytes";

/// The test-only RSA public key of `tests/fixtures/jwt`.
fn rsa_public_pem() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt/rsa_public.pem")
}

/// A verifier trusting the HS256 `SECRET` (no kid) and the RSA key under kid `rsa`.
fn verifier() -> jwt::Verifier {
    let key = jwt::load_pem(jsonwebtoken::Algorithm::RS256, &rsa_public_pem()).expect("RSA");
    jwt::Verifier::new(
        ISSUER.into(),
        ISSUER.into(),
        Some(SECRET),
        vec![("rsa".into(), key)],
    )
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header and claims, its signature an HMAC-SHA256 under `key`.
fn hmac_token(header: &Value, claims: &Value, key: &[u8]) -> String {
    use hmac::Mac;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Whether a claim is right, wrong, or missing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Claim {
    Right,
    Wrong,
    Missing,
}

fn claim() -> impl Strategy<Value = Claim> {
    prop::sample::select(vec![Claim::Right, Claim::Wrong, Claim::Missing])
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn garbage_tokens_are_never_accepted(
        s in prop_oneof![hostile(), "[A-Za-z0-9_-]{0,40}(\\.[A-Za-z0-9_-]{0,60}){2}"],
        header in prop::collection::vec(any::<u8>(), 0..64),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let v = verifier();
        prop_assert!(v.verify(&s).is_err());
        let segments = format!("{}.{}.{}", b64(&header), b64(&body), b64(&body));
        prop_assert!(v.verify(&segments).is_err());
        let huge = "a".repeat(16 * 1024 + 1);
        let refusal = v.verify(&huge).err();
        prop_assert_eq!(refusal.as_deref(), Some("token is too large"));
    }

    #[test]
    fn claims_verify_only_when_all_are_right(
        iss in claim(),
        aud in claim(),
        sub in claim(),
        exp in claim(),
        nbf in claim(),
        wrong_key in any::<bool>(),
    ) {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({"roles": ["MEMBER"]});
        let mut set = |name: &str, c: Claim, right: Value, wrong: Value| match c {
            Claim::Right => claims[name] = right,
            Claim::Wrong => claims[name] = wrong,
            Claim::Missing => {}
        };
        set("iss", iss, ISSUER.into(), "evil".into());
        set("aud", aud, ISSUER.into(), "other".into());
        set("sub", sub, "user-1".into(), 42.into());
        set("exp", exp, (now + 600).into(), (now - 600).into());
        set("nbf", nbf, (now - 600).into(), (now + 600).into());
        let key: &[u8] = if wrong_key { b"another-secret-of-at-least-32-bytes" } else { SECRET };
        let token = hmac_token(&json!({"alg": "HS256", "typ": "JWT"}), &claims, key);
        let all_right =
            [iss, aud, sub, exp].iter().all(|c| *c == Claim::Right) && nbf != Claim::Wrong;
        prop_assert_eq!(verifier().verify(&token).is_ok(), all_right && !wrong_key, "{}", claims);
    }

    #[test]
    fn algorithm_confusion_and_tampering_are_refused(
        alg in prop::sample::select(vec![
            "HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA", "PS256", "none", "None", "",
        ]),
        kid in prop::option::of(prop::sample::select(vec!["rsa", "unknown", ""])),
        use_public_key in any::<bool>(),
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(b"AaZz09-_.".to_vec()),
    ) {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss": ISSUER, "aud": ISSUER, "sub": "u", "exp": now + 600});
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        let rsa_pem = std::fs::read(rsa_public_pem()).expect("RSA fixture");
        let key: &[u8] = if use_public_key { &rsa_pem } else { SECRET };
        let token = hmac_token(&header, &claims, key);
        let genuine = alg == "HS256" && kid.is_none() && !use_public_key;
        let v = verifier();
        let signer = if use_public_key { "RSA public" } else { "shared" };
        let accepted = v.verify(&token).is_ok();
        prop_assert_eq!(accepted, genuine, "{} signed by the {} key", header, signer);
        if genuine {
            // Any change to the signed header or claims, or any truncation, is refused.
            let signed = token.rfind('.').expect("three segments");
            let i = at.index(signed);
            let mut bytes = token.clone().into_bytes();
            prop_assume!(bytes[i] != with);
            bytes[i] = with;
            let tampered = String::from_utf8(bytes).expect("ascii");
            prop_assert!(v.verify(&tampered).is_err(), "{}", tampered);
            prop_assert!(v.verify(&token[..at.index(token.len())]).is_err());
        }
    }

    #[test]
    fn api_keys_are_prefixed_random_and_only_their_hash_is_kept(s in hostile(), t in hostile()) {
        let key = api_key::generate();
        let body = key.secret.strip_prefix(api_key::PREFIX).expect("ak_ prefix");
        prop_assert_eq!(URL_SAFE_NO_PAD.decode(body).map(|b| b.len()), Ok(32));
        prop_assert_eq!(&key.hash, &hex::encode(Sha256::digest(key.secret.as_bytes())));
        prop_assert_eq!(key.prefix.as_str(), &key.secret[..10]);
        let h = api_key::hash(&s);
        prop_assert_eq!(h.len(), 64);
        prop_assert!(h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(h == api_key::hash(&t), s == t);
        let token = api_key::random_token("ivt_");
        let body = token.strip_prefix("ivt_").map(|b| URL_SAFE_NO_PAD.decode(b).map(|b| b.len()));
        prop_assert_eq!(body, Some(Ok(32)));
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn request_messages_decode_from_any_bytes_and_round_trip(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        use prost::Message;
        // Whatever prost accepts survives a re-encode and decode unchanged.
        if let Ok(m) = proto::CreateOrganizationRequest::decode(bytes.as_slice()) {
            let again = proto::CreateOrganizationRequest::decode(m.encode_to_vec().as_slice());
            prop_assert_eq!(again, Ok(m));
        }
        if let Ok(m) = proto::RecordUsageBatchRequest::decode(bytes.as_slice()) {
            let again = proto::RecordUsageBatchRequest::decode(m.encode_to_vec().as_slice());
            prop_assert_eq!(again, Ok(m));
        }
    }
}

/// rust_decimal keeps at most 28 decimals and rounds the rest, so an amount whose
/// non-zero digits all lie beyond the 28th decimal parses as zero instead of failing the
/// scale limit: a non-negative field (e.g. a usage cost) then stores 0.
#[test]
fn amounts_beyond_28_decimals_are_refused_not_rounded_to_zero() {
    for text in [
        "0.000000000000000000000000000001",
        "0.0000000000000000000000000000009",
    ] {
        let parsed = money::parse_amount(text, 6, false);
        assert!(parsed.is_err(), "{text:?} -> {parsed:?}");
    }
}

proptest! {
    #![proptest_config(cases(1024))]

    /// Lowercasing can lengthen a local part (`İ` → `i̇`), so an accepted email can fail
    /// its own rule once stored, e.g. 32 × `İ` + `@example.com`.
    #[test]
    fn accepted_emails_stay_valid_once_normalised(
        local in "[a-z0-9.]{0,2}İ{22,31}", domain in "[a-z]{1,10}\\.[a-z]{2,3}",
    ) {
        let address = format!("{local}@{domain}");
        if let Ok(normalised) = text::email(&address) {
            prop_assert_eq!(text::email(&normalised), Ok(normalised.clone()));
        }
    }
}
