//! The tower layer that wraps every gRPC call in a span and records its metrics.
//!
//! [`RpcLayer`] sits outermost on the gRPC server, so calls the auth layer refuses are
//! spanned and counted too; health and reflection pass through untouched. For a call
//! under `/tenantry.v1.` it opens the `rpc` span (target `tenantry::rpc`: `otel.name`,
//! `rpc.service`, `rpc.method`, and later `tenantry.org` and `tenantry.caller` from the
//! auth layer), lets [`otel::adopt_parent`] join the caller's W3C trace, and polls the
//! inner service and then the response body inside the span. The call ends when its
//! status is known: at once for a trailers-only response (`grpc-status` in the
//! headers), else with the trailers frame at the end of the body (so streams end with
//! their body), or as CANCELLED when the body is dropped first (the client went away).
//! Ending records `rpc.grpc.status_code` (and `otel.status_code = "ERROR"` for
//! server-side codes), emits "rpc finished" (debug; warn for UNKNOWN, INTERNAL and
//! DATA_LOSS) and updates the request counter and latency histogram of [`Metrics`].

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Span, field::Empty};

use crate::{
    auth::method::Method,
    telemetry::{metrics::Metrics, otel},
};

/// Package prefix of the paths that get a span.
const TRACED_PREFIX: &str = "/tenantry.v1.";

/// The canonical name of a gRPC code (`"OK"`, `"NOT_FOUND"`…), as in the `code` label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether `code` means the server failed (the span's status is ERROR and the end of
/// the call is logged at warn), as opposed to a refusal of the caller's request.
pub fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The `grpc-status` in `headers` (response headers or trailers); an unparsable value
/// is UNKNOWN, as clients read it.
pub fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// Tower layer installing [`RpcService`].
#[derive(Clone, Debug)]
pub struct RpcLayer {
    metrics: Arc<Metrics>,
}

impl RpcLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        RpcLayer { metrics }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Spans each tenantry call and records its status, latency and count when it ends.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Unpin,
{
    type Response = http::Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if !path.starts_with(TRACED_PREFIX) {
            return RpcFuture {
                inner: self.inner.call(request),
                call: None,
            };
        }
        let start = Instant::now();
        let method = Method::lookup(path);
        let name = path.strip_prefix('/').unwrap_or(path);
        let (service, method_name) = name.split_once('/').unwrap_or((name, ""));
        let span = tracing::info_span!(
            target: "tenantry::rpc",
            "rpc",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method_name,
            tenantry.org = Empty,
            tenantry.caller = Empty,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
            trace_id = Empty,
        );
        otel::adopt_parent(&span, request.headers());
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        RpcFuture {
            inner,
            call: Some(Call {
                span,
                method,
                start,
                metrics: self.metrics.clone(),
                done: false,
            }),
        }
    }
}

/// One call in progress; ends once, as CANCELLED when dropped before its status is known.
struct Call {
    span: Span,
    method: Option<Method>,
    start: Instant,
    metrics: Arc<Metrics>,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.span.record("rpc.grpc.status_code", code as i64);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        // Faults are logged at warn; shed calls and timeouts (UNAVAILABLE,
        // DEADLINE_EXCEEDED) only at debug, so an overload does not flood the log: the
        // metrics count them.
        if matches!(code, Code::Unknown | Code::Internal | Code::DataLoss) {
            tracing::warn!(target: "tenantry::rpc", parent: &self.span, code = code as i32, elapsed_ms, "rpc finished");
        } else {
            tracing::debug!(target: "tenantry::rpc", parent: &self.span, code = code as i32, elapsed_ms, "rpc finished");
        }
        self.metrics.observe_rpc(self.method, code, elapsed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// The response future of [`RpcService`]: polls the inner service inside the span.
pub struct RpcFuture<F> {
    inner: F,
    call: Option<Call>,
}

impl<F, B, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<RpcBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = ready!(match &this.call {
            Some(call) => {
                let _entered = call.span.enter();
                Pin::new(&mut this.inner).poll(cx)
            }
            None => Pin::new(&mut this.inner).poll(cx),
        });
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only response (errors, mostly) ends the call here.
                let call = call.and_then(|mut call| match grpc_status(response.headers()) {
                    Some(code) => {
                        call.finish(code);
                        None
                    }
                    None => Some(call),
                });
                Ok(response.map(|inner| RpcBody { inner, call }))
            }
            Err(error) => {
                if let Some(mut ended) = call {
                    ended.finish(Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

/// A response body that ends its call with the `grpc-status` of its trailers.
pub struct RpcBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for RpcBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(call) = this.call.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        let polled = {
            let _entered = call.span.enter();
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Internal),
            // A gRPC body ends with trailers; ending without them is a broken call.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = ended {
            call.finish(code);
            this.call = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_canonical_grpc_names() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(Code::from_i32(42)), "UNKNOWN");
        for i in 0..=16 {
            let code = Code::from_i32(i);
            assert_eq!(code as i32, i);
            assert!(
                code_name(code)
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
            );
        }
    }

    #[test]
    fn only_server_side_codes_are_server_errors() {
        let server: Vec<i32> = (0..=16)
            .map(Code::from_i32)
            .filter(|code| is_server_error(*code))
            .map(|code| code as i32)
            .collect();
        assert_eq!(server, vec![2, 4, 12, 13, 14, 15]);
    }

    #[test]
    fn grpc_status_is_read_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(grpc_status(&headers), Some(Code::Ok));
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(grpc_status(&headers), Some(Code::Unauthenticated));
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_status(&headers), Some(Code::Unknown));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&headers), Some(Code::Unknown));
    }
}
