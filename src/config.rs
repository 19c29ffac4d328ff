//! Settings from flags and environment variables over defaults (12-factor).
//! Secrets are wrapped so they never appear in logs or `Debug` output.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use crate::domain::plans::Catalogue;

use clap::{Args, ValueEnum};
use lettre::{Address, AsyncSmtpTransport, Tokio1Executor, message::Mailbox};

/// A secret value that prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A public key for a `kid`: `KID:ALG:PATH` with ALG one of RS256, ES256, EdDSA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeySpec {
    /// Key id matched against the token header's `kid`.
    pub kid: String,
    /// Algorithm name.
    pub algorithm: String,
    /// PEM file.
    pub path: PathBuf,
}

impl std::str::FromStr for PublicKeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kid), Some(algorithm), Some(path)) if !kid.is_empty() && !path.is_empty() => {
                Ok(PublicKeySpec {
                    kid: kid.to_owned(),
                    algorithm: algorithm.to_owned(),
                    path: PathBuf::from(path),
                })
            }
            _ => Err("expected KID:ALG:PATH, e.g. main:RS256:/etc/tenantry/jwt.pem".into()),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON lines.
    Json,
}

/// Database flags shared by every command.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE` (created if absent, WAL mode) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://tenantry.db")]
    pub database_url: String,
    /// Maximum pooled database connections.
    #[arg(long, env = "TENANTRY_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

/// Token verification flags.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 shared secret for tokens without `kid`.
    #[arg(long, env = "TENANTRY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Public key for tokens with a `kid`, as KID:ALG:PATH (repeatable; comma-separated in the env var).
    #[arg(
        long = "jwt-public-key",
        env = "TENANTRY_JWT_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub jwt_public_keys: Vec<PublicKeySpec>,
    /// JWKS file with public keys (each with a `kid`).
    #[arg(long, env = "TENANTRY_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "TENANTRY_JWT_ISSUER", default_value = "tenantry")]
    pub jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "TENANTRY_JWT_AUDIENCE", default_value = "tenantry")]
    pub jwt_audience: String,
    /// Directory for local state such as the dev signing secret.
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
}

/// Payment and billing flags.
#[derive(Debug, Clone, Args)]
pub struct BillingArgs {
    /// Default payment gateway for BuyCredits: `manual` (operator-confirmed, the
    /// embedded default) or `stripe` (needs --stripe-secret-key).
    #[arg(long, env = "TENANTRY_PAYMENT_GATEWAY", default_value = "manual")]
    pub payment_gateway: String,
    /// Stripe secret API key (`sk_...`); enables the `stripe` gateway.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    /// Stripe API base URL.
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,
    /// Stripe webhook signing secret (`whsec_...`); enables POST /webhooks/stripe.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
    /// How far a credit balance may go below zero, e.g. "50.00" (default: never).
    #[arg(long, env = "TENANTRY_CREDIT_OVERDRAFT", default_value = "0")]
    pub credit_overdraft: String,
    /// Days between an invoice's issue and its due date.
    #[arg(
        long,
        env = "TENANTRY_INVOICE_PAYMENT_TERMS_DAYS",
        default_value_t = 30
    )]
    pub invoice_payment_terms_days: u32,
    /// Plan and add-on catalogue file (TOML, or YAML by extension); default: the
    /// built-in catalogue (free, basic, pro, team, business, enterprise).
    #[arg(long, env = "TENANTRY_CATALOGUE")]
    pub catalogue: Option<PathBuf>,
    /// Days a renewal invoice may stay unpaid before its subscription is PAST_DUE.
    #[arg(long, env = "TENANTRY_SUBSCRIPTION_GRACE_DAYS", default_value_t = 7)]
    pub subscription_grace_days: u32,
    /// Seconds between runs of the renewal cycle inside the server (0 = never; run it
    /// with `tenantry billing-cycle` instead).
    #[arg(
        long,
        env = "TENANTRY_BILLING_CYCLE_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    pub billing_cycle_interval_seconds: u64,
}

/// Billing settings.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// Default gateway name: `manual` or `stripe`.
    pub payment_gateway: String,
    /// Stripe secret key; the `stripe` gateway exists only when set.
    pub stripe_secret_key: Option<Secret>,
    /// Stripe API base URL.
    pub stripe_api_base: String,
    /// Stripe webhook signing secret; webhooks are refused without it.
    pub stripe_webhook_secret: Option<Secret>,
    /// Overdraft allowed on credit balances, in micro-units (0 = never negative).
    pub credit_overdraft_micros: i64,
    /// Days from issue to due date.
    pub invoice_payment_terms_days: u32,
    /// Plans and add-ons.
    pub catalogue: Arc<Catalogue>,
    /// Days an unpaid renewal invoice waits before the subscription is PAST_DUE.
    pub subscription_grace_days: u32,
    /// How often the server runs the renewal cycle; `None` = never.
    pub billing_cycle_interval: Option<Duration>,
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings {
            payment_gateway: "manual".into(),
            stripe_secret_key: None,
            stripe_api_base: "https://api.stripe.com".into(),
            stripe_webhook_secret: None,
            credit_overdraft_micros: 0,
            invoice_payment_terms_days: 30,
            catalogue: Arc::new(Catalogue::builtin()),
            subscription_grace_days: 7,
            billing_cycle_interval: None,
        }
    }
}

impl BillingArgs {
    /// Checks the flags and turns them into settings.
    pub fn settings(&self) -> Result<BillingSettings, String> {
        if !matches!(self.payment_gateway.as_str(), "manual" | "stripe") {
            return Err("--payment-gateway must be `manual` or `stripe`".into());
        }
        if self.payment_gateway == "stripe" && self.stripe_secret_key.is_none() {
            return Err("--payment-gateway stripe needs --stripe-secret-key".into());
        }
        let overdraft = crate::domain::money::parse_amount(&self.credit_overdraft, 6, false)
            .map_err(|e| format!("--credit-overdraft {e}"))?;
        Ok(BillingSettings {
            payment_gateway: self.payment_gateway.clone(),
            stripe_secret_key: self.stripe_secret_key.clone().map(Secret::new),
            stripe_api_base: self.stripe_api_base.trim_end_matches('/').to_owned(),
            stripe_webhook_secret: self.stripe_webhook_secret.clone().map(Secret::new),
            credit_overdraft_micros: crate::domain::money::to_micros(overdraft),
            invoice_payment_terms_days: self.invoice_payment_terms_days,
            catalogue: Arc::new(match &self.catalogue {
                Some(path) => Catalogue::load(path)?,
                None => Catalogue::builtin(),
            }),
            subscription_grace_days: self.subscription_grace_days,
            billing_cycle_interval: (self.billing_cycle_interval_seconds > 0)
                .then(|| Duration::from_secs(self.billing_cycle_interval_seconds)),
        })
    }
}

/// Event delivery, email and transfer flags.
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// Milliseconds between dispatcher rounds (sequencing, webhook and email delivery,
    /// transfer expiry) when nothing wakes it earlier.
    #[arg(long, env = "TENANTRY_EVENTS_POLL_MS", default_value_t = 1000)]
    pub events_poll_ms: u64,
    /// Attempts per webhook delivery (and email) before it is dead-lettered.
    #[arg(long, env = "TENANTRY_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,
    /// Delay before the first retry in milliseconds; doubled after each failure (at most
    /// one hour).
    #[arg(long, env = "TENANTRY_WEBHOOK_RETRY_BASE_MS", default_value_t = 30_000)]
    pub webhook_retry_base_ms: u64,
    /// Seconds a webhook POST may take.
    #[arg(long, env = "TENANTRY_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10)]
    pub webhook_timeout_seconds: u64,
    /// SMTP server, e.g. `smtp://user:pass@mail.example.com:587?tls=required` or
    /// `smtps://…`; without it emails are logged, not sent.
    #[arg(long, env = "TENANTRY_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender address of emails.
    #[arg(
        long,
        env = "TENANTRY_SMTP_FROM",
        default_value = "tenantry <no-reply@tenantry.local>"
    )]
    pub smtp_from: String,
    /// Days a pending tenant transfer waits for a decision before it expires.
    #[arg(long, env = "TENANTRY_TENANT_TRANSFER_TTL_DAYS", default_value_t = 14)]
    pub tenant_transfer_ttl_days: u64,
}

/// The shortest pause between dispatcher rounds (a smaller `--events-poll-ms` is raised
/// to it).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Event delivery, email and transfer settings.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Whether this process runs the dispatcher (sequencer, deliveries, expiries).
    pub dispatcher: bool,
    /// Pause between dispatcher rounds when nothing wakes it (and between a caught-up
    /// WatchEvents stream's reads); at least [`MIN_POLL_INTERVAL`] from flags.
    pub poll_interval: Duration,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay, doubled per failure.
    pub retry_base: Duration,
    /// Timeout of one webhook POST.
    pub webhook_timeout: Duration,
    /// SMTP URL (lettre syntax, checked from flags); `None` logs emails instead.
    pub smtp_url: Option<Secret>,
    /// Sender of emails.
    pub smtp_from: Mailbox,
    /// How long a pending tenant transfer lives.
    pub tenant_transfer_ttl: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            dispatcher: true,
            poll_interval: Duration::from_millis(1000),
            max_attempts: 8,
            retry_base: Duration::from_secs(30),
            webhook_timeout: Duration::from_secs(10),
            smtp_url: None,
            smtp_from: Mailbox::new(
                Some("tenantry".into()),
                Address::new_dangerous("no-reply", "tenantry.local"),
            ),
            tenant_transfer_ttl: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl EventArgs {
    /// Checks the flags and turns them into settings.
    pub fn settings(&self) -> Result<EventSettings, String> {
        if self.webhook_max_attempts == 0 {
            return Err("--webhook-max-attempts must be at least 1".into());
        }
        if self.tenant_transfer_ttl_days == 0 {
            return Err("--tenant-transfer-ttl-days must be at least 1".into());
        }
        let smtp_from: Mailbox = self.smtp_from.parse().map_err(|e| {
            format!("--smtp-from must be a mailbox such as `tenantry <no-reply@example.com>`: {e}")
        })?;
        if let Some(url) = &self.smtp_url {
            // lettre's URL errors name the scheme or the problem, never the credentials.
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| {
                format!(
                    "--smtp-url must be an SMTP URL such as `smtp://host:587?tls=required` \
                     or `smtps://user:pass@host`: {e}"
                )
            })?;
        }
        Ok(EventSettings {
            dispatcher: true,
            poll_interval: Duration::from_millis(self.events_poll_ms).max(MIN_POLL_INTERVAL),
            max_attempts: self.webhook_max_attempts,
            retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(1)),
            webhook_timeout: Duration::from_secs(self.webhook_timeout_seconds.max(1)),
            smtp_url: self.smtp_url.clone().map(Secret::new),
            smtp_from,
            tenant_transfer_ttl: Duration::from_secs(self.tenant_transfer_ttl_days * 24 * 3600),
        })
    }
}

/// Request limit flags of `tenantry serve`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest gRPC message accepted or sent, in bytes; a bigger request fails
    /// RESOURCE_EXHAUSTED (`MESSAGE_TOO_LARGE`) before it is decoded.
    #[arg(long, env = "TENANTRY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Seconds a unary call may take before it fails DEADLINE_EXCEEDED (a shorter
    /// `grpc-timeout` from the client wins; client-streaming calls are bound by the
    /// client's deadline only, and server streams by the time to their first response).
    #[arg(long, env = "TENANTRY_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// Calls in progress at once across all connections; one more fails UNAVAILABLE
    /// (`OVERLOADED`) at once instead of queueing (health and reflection are exempt).
    #[arg(long, env = "TENANTRY_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams (calls, open event streams included) one connection may have open.
    #[arg(long, env = "TENANTRY_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
}

/// Largest request header block (gRPC metadata) of one call, in bytes.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Largest body of `POST /webhooks/stripe`, in bytes (Stripe events are a few KiB).
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;

/// Limits on what one call or connection may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest gRPC message, either way.
    pub max_message_bytes: usize,
    /// Longest unary call (time to the response headers of a server stream).
    pub request_timeout: Duration,
    /// Calls in progress at once.
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest request header block.
    pub max_header_list_bytes: u32,
    /// Largest Stripe webhook body.
    pub max_webhook_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            max_concurrent_streams: 256,
            max_header_list_bytes: MAX_HEADER_LIST_BYTES,
            max_webhook_body_bytes: MAX_WEBHOOK_BODY_BYTES,
        }
    }
}

impl LimitArgs {
    /// Checks the flags and turns them into limits.
    pub fn settings(&self) -> Result<Limits, String> {
        if self.max_message_bytes < 1024 || self.max_message_bytes > u32::MAX as usize {
            return Err("--max-message-bytes must be between 1024 and 4294967295".into());
        }
        if self.request_timeout_seconds == 0 {
            return Err("--request-timeout-seconds must be at least 1".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("--max-concurrent-requests must be at least 1".into());
        }
        if self.max_concurrent_streams == 0 {
            return Err("--max-concurrent-streams must be at least 1".into());
        }
        Ok(Limits {
            max_message_bytes: self.max_message_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            max_concurrent_requests: self.max_concurrent_requests,
            max_concurrent_streams: self.max_concurrent_streams,
            ..Limits::default()
        })
    }
}

/// Flags of `tenantry serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    /// Database.
    pub database: DatabaseArgs,
    #[command(flatten)]
    /// Tokens.
    pub auth: AuthArgs,
    #[command(flatten)]
    /// Payments and billing.
    pub billing: BillingArgs,
    #[command(flatten)]
    /// Events, webhooks, email and transfers.
    pub events: EventArgs,
    #[command(flatten)]
    /// Request limits.
    pub limits: LimitArgs,
    /// gRPC listen address.
    #[arg(long, env = "TENANTRY_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (/healthz, /readyz, webhooks, metrics).
    #[arg(long, env = "TENANTRY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Development mode: create and persist a signing secret in the data directory and
    /// print a root-admin token.
    #[arg(long)]
    pub dev: bool,
    /// Do not apply pending migrations at start.
    #[arg(long, env = "TENANTRY_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Require a pre-approved signup for RegisterOrganization.
    #[arg(long, env = "TENANTRY_CLOSED_SIGNUP")]
    pub closed_signup: bool,
    /// Hours an invitation stays valid.
    #[arg(long, env = "TENANTRY_INVITATION_TTL_HOURS", default_value_t = 168)]
    pub invitation_ttl_hours: u64,
    /// Unauthenticated calls allowed per minute per client address.
    #[arg(long, env = "TENANTRY_PUBLIC_RATE_PER_MINUTE", default_value_t = 60)]
    pub public_rate_per_minute: u32,
    /// Seconds health reports NOT_SERVING before the listeners close on shutdown.
    #[arg(long, env = "TENANTRY_DRAIN_SECONDS", default_value_t = 2)]
    pub drain_seconds: u64,
    /// Log format.
    #[arg(long, env = "TENANTRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Everything the service needs to run; tests build it directly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// gRPC listen address (port 0 picks a free one).
    pub grpc_addr: SocketAddr,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Pool size.
    pub db_max_connections: u32,
    /// Apply migrations at start.
    pub migrate: bool,
    /// Required `iss`.
    pub jwt_issuer: String,
    /// Required `aud`.
    pub jwt_audience: String,
    /// HS256 secret.
    pub jwt_secret: Option<Secret>,
    /// Public keys by kid.
    pub jwt_public_keys: Vec<PublicKeySpec>,
    /// JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// Whether RegisterOrganization needs a pre-approval.
    pub closed_signup: bool,
    /// Invitation validity.
    pub invitation_ttl: Duration,
    /// Unauthenticated calls per minute per address.
    pub public_rate_per_minute: u32,
    /// NOT_SERVING period before closing on shutdown.
    pub drain: Duration,
    /// Payments and billing.
    pub billing: BillingSettings,
    /// Events, webhooks, email and transfers.
    pub events: EventSettings,
    /// Message size, timeout and concurrency limits.
    pub limits: Limits,
}

impl Settings {
    /// Settings for a local instance on `database_url` with an HS256 `secret`, listening
    /// on loopback ports chosen by the OS.
    pub fn local(database_url: impl Into<String>, secret: &[u8]) -> Self {
        Settings {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            db_max_connections: 8,
            migrate: true,
            jwt_issuer: "tenantry".into(),
            jwt_audience: "tenantry".into(),
            jwt_secret: Some(Secret::new(secret.to_vec())),
            jwt_public_keys: Vec::new(),
            jwks_file: None,
            closed_signup: false,
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            public_rate_per_minute: 60,
            drain: Duration::ZERO,
            billing: BillingSettings::default(),
            events: EventSettings::default(),
            limits: Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `tenantry serve`'s event flags alone.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        events: EventArgs,
    }

    fn settings(flags: &[&str]) -> Result<EventSettings, String> {
        let args = std::iter::once("tenantry").chain(flags.iter().copied());
        Flags::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .events
            .settings()
    }

    #[test]
    fn default_event_flags_make_the_default_settings() {
        let from_flags = settings(&[]).expect("defaults");
        let defaults = EventSettings::default();
        assert_eq!(from_flags.smtp_from, defaults.smtp_from);
        assert_eq!(
            from_flags.smtp_from.to_string(),
            "tenantry <no-reply@tenantry.local>"
        );
        assert_eq!(from_flags.poll_interval, defaults.poll_interval);
        assert_eq!(from_flags.smtp_url, None);
    }

    #[test]
    fn a_bad_smtp_sender_or_url_fails_at_startup() {
        let error =
            settings(&["--smtp-from", "tenantry at example dot com"]).expect_err("not a mailbox");
        assert!(
            error.starts_with("--smtp-from must be a mailbox"),
            "{error}"
        );
        for url in [
            "http://mail.example.com",
            "smtp://user:hunter2@mail.example.com?tls=sometimes",
            "smtp:///no-host",
            "mail.example.com:25",
        ] {
            let error = settings(&["--smtp-url", url]).expect_err(url);
            assert!(
                error.starts_with("--smtp-url must be an SMTP URL"),
                "{url}: {error}"
            );
            assert!(!error.contains("hunter2"), "never the password: {error}");
        }
        let good = settings(&[
            "--smtp-url",
            "smtp://user:hunter2@mail.example.com:587?tls=required",
            "--smtp-from",
            "Billing <billing@example.com>",
        ])
        .expect("good flags");
        assert_eq!(good.smtp_from.email.to_string(), "billing@example.com");
        assert!(good.smtp_url.is_some());
    }

    /// `tenantry serve`'s limit flags alone.
    #[derive(Parser)]
    struct LimitFlags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn limits(flags: &[&str]) -> Result<Limits, String> {
        let args = std::iter::once("tenantry").chain(flags.iter().copied());
        LimitFlags::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .limits
            .settings()
    }

    #[test]
    fn default_limit_flags_make_the_default_limits_and_zero_is_refused() {
        assert_eq!(limits(&[]).expect("defaults"), Limits::default());
        let set = limits(&[
            "--request-timeout-seconds",
            "5",
            "--max-message-bytes",
            "65536",
        ]);
        let set = set.expect("limits");
        assert_eq!(set.request_timeout, Duration::from_secs(5));
        assert_eq!(set.max_message_bytes, 65536);
        for flag in [
            "--request-timeout-seconds",
            "--max-concurrent-requests",
            "--max-concurrent-streams",
            "--max-message-bytes",
        ] {
            let error = limits(&[flag, "0"]).expect_err(flag);
            assert!(error.starts_with(flag), "{error}");
        }
    }

    #[test]
    fn the_poll_interval_has_a_floor() {
        let fast = settings(&["--events-poll-ms", "0"]).expect("settings");
        assert_eq!(fast.poll_interval, MIN_POLL_INTERVAL);
        let slow = settings(&["--events-poll-ms", "250"]).expect("settings");
        assert_eq!(slow.poll_interval, Duration::from_millis(250));
    }
}
