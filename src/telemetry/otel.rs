//! The tracing subscriber (text or JSON logs), OpenTelemetry export over OTLP, and W3C
//! trace context taken from incoming calls.
//!
//! [`init`] installs one global subscriber with two layers, each with its own filter:
//! - the log layer (stdout), filtered by `RUST_LOG` (default
//!   `info,sqlx=warn,sea_orm=warn`);
//! - an OpenTelemetry layer that sees only spans (never events, so no log text) whose
//!   target is `tenantry` or `tenantry::…`, at INFO or above: sqlx and SeaORM spans, and
//!   the SQL they carry, never reach it. Its spans always get real trace and span ids;
//!   they are exported over OTLP/gRPC (batched) only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; otherwise nothing is sampled and
//!   nothing is recorded beyond the ids. `RUST_LOG` does not change what is exported.
//!
//! The resource carries `service.name` (`OTEL_SERVICE_NAME`, else a `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`, else `tenantry`), `service.version` and every pair in
//! `OTEL_RESOURCE_ATTRIBUTES`. The other standard `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*`
//! variables are read by the exporter and the batch processor.
//!
//! With `--log-format json` every line is one JSON object, as tracing-subscriber writes
//! it, with the ids of the innermost exported span in front when the event happened
//! inside one (`span` and `spans` hold the fields of the current span and of its
//! ancestors):
//!
//! ```json
//! {"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",
//!  "timestamp":"2026-05-01T10:00:00.000000Z","level":"DEBUG",
//!  "fields":{"message":"rpc finished","code":0,"elapsed_ms":3},"target":"tenantry::rpc",
//!  "span":{"otel.name":"tenantry.v1.OrganizationService/CreateOrganization",…,"name":"rpc"},
//!  "spans":[{…,"name":"rpc"}]}
//! ```
//!
//! Lines outside any span (start-up, background work without a span) have no
//! `trace_id`/`span_id`. The text format shows `trace_id` among the RPC span's fields.

use std::{
    fmt,
    io::IsTerminal,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context as _;
use http::HeaderMap;
use opentelemetry::{
    Key, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    resource::{EnvResourceDetector, ResourceDetector, TelemetryResourceDetector},
    trace::{Sampler, SdkTracerProvider},
};
use tracing::{Event, Level, Span, Subscriber, dispatcher::WeakDispatch};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::filter_fn,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::LogFormat;

/// The log filter when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,sea_orm=warn";
/// The service name when neither `OTEL_SERVICE_NAME` nor the resource attributes set one.
const DEFAULT_SERVICE_NAME: &str = "tenantry";
/// How long [`Telemetry::shutdown`] waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The installed tracer provider; [`Telemetry::shutdown`] flushes it.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still queued and stops the provider, waiting at most a few
    /// seconds; an unreachable collector is logged, not fatal.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The SDK blocks while its export thread drains the queue (shutdown exports
        // what is pending), so keep that off the async workers.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT));
        match tokio::time::timeout(SHUTDOWN_TIMEOUT + Duration::from_secs(1), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot flush spans at shutdown"),
            Ok(Err(e)) => tracing::warn!(error = %e, "span flush task failed"),
            Err(_) => tracing::warn!("span flush at shutdown timed out"),
        }
    }
}

/// Installs the global subscriber (logs in `format` plus the OpenTelemetry layer), the
/// W3C TraceContext propagator, and the OTLP exporter when an endpoint is configured.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let exporting = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
    let resource = resource();
    let service = resource
        .get(&Key::from_static_str("service.name"))
        .map(|name| name.to_string())
        .unwrap_or_default();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let provider = if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .context("cannot build the OTLP span exporter")?;
        builder.with_batch_exporter(exporter).build()
    } else {
        // Ids only: spans are never sampled, so nothing is recorded or processed.
        builder.with_sampler(Sampler::AlwaysOff).build()
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let exported = filter_fn(|meta| {
        let target = meta.target();
        // Levels compare by verbosity: `<= INFO` is INFO, WARN and ERROR.
        meta.is_span()
            && *meta.level() <= Level::INFO
            && (target == "tenantry" || target.starts_with("tenantry::"))
    })
    .with_max_level_hint(Level::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tenantry"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // tenantry reads its spans' OpenTelemetry contexts through the tracing span
        // (`OpenTelemetrySpanExt::context`, `get_otel_context`), never through
        // `opentelemetry::Context::current()`, so making each span's context the current
        // one on every enter (every poll of an RPC's future) only cost time.
        .with_context_activation(false)
        .with_filter(exported)
        .boxed();
    let env_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let dispatch = Arc::new(OnceLock::new());
    let logs = match format {
        // Colours only for a person at a terminal, not for a log shipper.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format().json(),
                dispatch: Arc::clone(&dispatch),
            })
            .boxed(),
    }
    .with_filter(env_filter)
    .boxed();
    tracing_subscriber::registry()
        .with(vec![logs, otel])
        .try_init()
        .context("cannot install the tracing subscriber")?;
    tracing::dispatcher::get_default(|d| dispatch.set(d.downgrade()))
        .map_err(|_| anyhow::anyhow!("the tracing subscriber was installed twice"))?;
    if exporting {
        tracing::info!(service, "exporting spans over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

/// The resource: defaults, then `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`.
fn resource() -> Resource {
    let detectors: [Box<dyn ResourceDetector>; 2] = [
        Box::new(TelemetryResourceDetector),
        Box::new(EnvResourceDetector::new()),
    ];
    let builder = Resource::builder_empty()
        .with_service_name(DEFAULT_SERVICE_NAME)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_detectors(&detectors);
    match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.trim().is_empty() => builder.with_service_name(name),
        _ => builder,
    }
    .build()
}

/// Makes `span` a child of the caller's trace when `headers` carry a W3C `traceparent`
/// (and records the span's trace id in its `trace_id` field). Harmless and cheap when
/// the span is disabled or no OpenTelemetry layer is installed.
pub fn adopt_parent(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() {
        return;
    }
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            // Fails only without an OpenTelemetry layer or for a started span: then
            // the span simply keeps its own trace.
            let _ = span.set_parent(parent);
        }
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
    }
}

/// Reads W3C trace context from HTTP/2 headers (gRPC metadata).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// A JSON event format that puts `trace_id` and `span_id` in front of tracing-subscriber's
/// JSON object when the event is inside an exported span.
struct WithTraceIds<F> {
    inner: F,
    /// The installed subscriber, needed to read a span's OpenTelemetry context (set
    /// right after installation; until then lines carry no ids).
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<F> WithTraceIds<F> {
    /// The ids of the innermost span in the event's scope that has OpenTelemetry ids.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<SpanContext>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let scope = ctx.event_scope()?;
        let dispatch = self.dispatch.get()?.upgrade()?;
        scope
            .filter_map(|span| tracing_opentelemetry::get_otel_context(&span.id(), &dispatch))
            .map(|cx| cx.span().span_context().clone())
            .find(SpanContext::is_valid)
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = self.ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn traced_span() -> (Span, HeaderMap) {
        let span =
            tracing::info_span!(target: "tenantry::rpc", "rpc", trace_id = tracing::field::Empty);
        let mut headers = HeaderMap::new();
        let parent = format!("00-{TRACE}-00f067aa0ba902b7-01");
        headers.insert("traceparent", parent.parse().expect("header"));
        (span, headers)
    }

    #[test]
    fn the_span_joins_the_callers_trace_without_an_exporter() {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let (span, headers) = traced_span();
            adopt_parent(&span, &headers);
            let context = span.context();
            assert_eq!(context.span().span_context().trace_id().to_string(), TRACE);
        });
    }

    #[test]
    fn adopting_is_harmless_without_an_opentelemetry_layer() {
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let (span, headers) = traced_span();
            adopt_parent(&span, &headers);
        });
        let (span, headers) = traced_span();
        adopt_parent(&span, &headers);
    }
}
