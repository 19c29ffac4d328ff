//! The gRPC server's per-call limits as one tower layer: a cap on the size of each
//! request message, a global cap on calls in progress (shedding, never queueing), and a
//! deadline per call.
//!
//! [`LimitLayer`] sits inside the telemetry layer, so calls it refuses are spanned and
//! counted like any other, and outside the auth layer, so a shed call costs no database
//! lookup and the deadline covers the credential check too. Health and reflection
//! calls are neither shed nor timed out, so probes stay answerable under load.
//!
//! tonic itself answers an oversized message OUT_OF_RANGE and a `grpc-timeout` that
//! runs out CANCELLED, from outside every layer (so unseen by the telemetry layer); this
//! layer answers first, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED as gRPC specifies.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use prost::Message;
use tokio::{sync::Semaphore, time::Instant};
use tonic::{Code, Status, body::Body, codegen::Bytes};
use tower_layer::Layer;
use tower_service::Service;

use crate::{config::Limits, error::Error, proto};

/// Package prefix of the calls that are shed and timed out.
const LIMITED_PREFIX: &str = "/tenantry.v1.";

/// How much earlier than the client's `grpc-timeout` the server gives up, so that its
/// DEADLINE_EXCEEDED wins over tonic's own CANCELLED for the same deadline (tonic's
/// timer starts a few microseconds earlier, outside every layer).
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// Tower layer installing [`LimitService`].
#[derive(Clone, Debug)]
pub struct LimitLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    in_flight: Arc<Semaphore>,
    max_concurrent: usize,
    max_message_bytes: usize,
    timeout: Duration,
    /// Paths of client-streaming methods: their handler runs as long as the client
    /// streams, so only the client's deadline bounds them.
    client_streaming: HashSet<String>,
}

impl LimitLayer {
    /// A layer enforcing `limits`; fails only if the embedded descriptors do not decode.
    pub fn new(limits: &Limits) -> anyhow::Result<Self> {
        let descriptors = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)?;
        let client_streaming = descriptors
            .file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service
                        .method
                        .iter()
                        .filter(|method| method.client_streaming())
                        .map(move |method| {
                            format!("/{}.{}/{}", file.package(), service.name(), method.name())
                        })
                })
            })
            .collect();
        Ok(LimitLayer {
            shared: Arc::new(Shared {
                in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
                max_concurrent: limits.max_concurrent_requests,
                max_message_bytes: limits.max_message_bytes,
                timeout: limits.request_timeout,
                client_streaming,
            }),
        })
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = LimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Applies the limits to each call; see the module documentation.
#[derive(Clone, Debug)]
pub struct LimitService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<http::Request<Body>> for LimitService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = &self.shared;
        let limit = shared.max_message_bytes;
        let request = request.map(|body| Body::new(CappedBody::new(body, limit)));
        let path = request.uri().path();
        if !path.starts_with(LIMITED_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
            let refused = Error::rejected(
                Code::Unavailable,
                "OVERLOADED",
                format!(
                    "the server is handling its limit of {} calls; retry with backoff",
                    shared.max_concurrent
                ),
            );
            return Box::pin(std::future::ready(Ok(Status::from(refused).into_http())));
        };
        // The deadline is fixed now, not when the future is first polled.
        let server = (!shared.client_streaming.contains(path)).then_some(shared.timeout);
        let deadline = match (client_timeout(request.headers()), server) {
            (Some(client), Some(server)) if server <= client => Some((server, false)),
            (Some(client), _) => Some((client.saturating_sub(CLIENT_DEADLINE_MARGIN), true)),
            (None, server) => server.map(|server| (server, false)),
        };
        let call = self.inner.call(request);
        let Some((after, by_client)) = deadline else {
            return Box::pin(async move {
                let response = call.await;
                drop(permit);
                response
            });
        };
        let timed = tokio::time::timeout_at(Instant::now() + after, call);
        Box::pin(async move {
            let response = match timed.await {
                Ok(response) => response,
                // Dropping the call drops its open transaction, which rolls back.
                Err(_) => Ok(Status::from(timed_out(after, by_client)).into_http()),
            };
            drop(permit);
            response
        })
    }
}

fn timed_out(after: Duration, by_client: bool) -> Error {
    let message = if by_client {
        "the call did not finish before the client's deadline (grpc-timeout)".to_owned()
    } else {
        format!(
            "the call did not finish within the server's limit of {} ms",
            after.as_millis()
        )
    };
    Error::rejected(Code::DeadlineExceeded, "TIMED_OUT", message)
}

/// The client's deadline from `grpc-timeout` (at most 8 digits and a unit, per the
/// gRPC HTTP/2 protocol); `None` when absent or malformed.
pub fn client_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A request body that fails RESOURCE_EXHAUSTED as soon as a gRPC message header
/// announces more than the limit, before the message is buffered or decoded.
struct CappedBody {
    inner: Body,
    limit: usize,
    /// The length-prefix being read: compression flag and 4 length bytes.
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message still to pass.
    remaining: usize,
    failed: bool,
}

impl CappedBody {
    fn new(inner: Body, limit: usize) -> Self {
        CappedBody {
            inner,
            limit,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            failed: false,
        }
    }

    /// Follows the message framing through `data`; the announced length of the first
    /// message over the limit.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), usize> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len());
                self.remaining -= skip;
                data = &data[skip..];
                continue;
            }
            let take = (self.header.len() - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            data = &data[take..];
            if self.header_len == self.header.len() {
                self.header_len = 0;
                let [_, a, b, c, d] = self.header;
                let length = u32::from_be_bytes([a, b, c, d]) as usize;
                if length > self.limit {
                    return Err(length);
                }
                self.remaining = length;
            }
        }
        Ok(())
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Err(length) = this.scan(data)
        {
            this.failed = true;
            let error = Error::Rejected {
                code: Code::ResourceExhausted,
                reason: "MESSAGE_TOO_LARGE",
                message: format!(
                    "the request message is {length} bytes, over the limit of {} bytes",
                    this.limit
                ),
                metadata: vec![("limit_bytes", this.limit.to_string())],
            };
            return Poll::Ready(Some(Err(error.into())));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::telemetry::rpc::grpc_status;

    /// Answers after `delay` (never, if `None`), OK.
    async fn slow(delay: Option<Duration>) -> Result<http::Response<Body>, Infallible> {
        match delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
        Ok(http::Response::new(Body::empty()))
    }

    fn call(path: &str, grpc_timeout: Option<&str>) -> http::Request<Body> {
        let mut request = http::Request::builder().uri(path);
        if let Some(timeout) = grpc_timeout {
            request = request.header("grpc-timeout", timeout);
        }
        request.body(Body::empty()).expect("request")
    }

    const GET: &str = "/tenantry.v1.OrganizationService/GetOrganization";

    #[tokio::test(start_paused = true)]
    async fn the_shorter_of_the_server_and_client_deadlines_ends_a_call() {
        let limits = Limits {
            request_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let layer = LimitLayer::new(&limits).expect("layer");
        let service = layer.layer(service_fn(|_| slow(None)));
        let started = Instant::now();
        let response = service.clone().oneshot(call(GET, Some("200m"))).await;
        let response = response.expect("a response");
        assert_eq!(
            grpc_status(response.headers()),
            Some(Code::DeadlineExceeded)
        );
        assert!(started.elapsed() < Duration::from_millis(200));
        let response = service.clone().oneshot(call(GET, None)).await;
        let response = response.expect("a response");
        assert_eq!(
            grpc_status(response.headers()),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(started.elapsed().as_secs(), 30);
        // A client stream is bound by the client's deadline only.
        let stream = "/tenantry.v1.BillingService/StreamUsage";
        let service = layer.layer(service_fn(|_| slow(Some(Duration::from_secs(60)))));
        let response = service.oneshot(call(stream, None)).await;
        assert_eq!(grpc_status(response.expect("a response").headers()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_over_the_cap_are_shed_but_health_is_not() {
        let limits = Limits {
            max_concurrent_requests: 1,
            ..Limits::default()
        };
        let service = LimitLayer::new(&limits)
            .expect("layer")
            .layer(service_fn(|_| slow(Some(Duration::from_secs(1)))));
        let first = tokio::spawn(service.clone().oneshot(call(GET, None)));
        tokio::task::yield_now().await;
        let shed = service.clone().oneshot(call(GET, None)).await;
        assert_eq!(
            grpc_status(shed.expect("a response").headers()),
            Some(Code::Unavailable)
        );
        let health = call("/grpc.health.v1.Health/Check", None);
        let health = service.clone().oneshot(health).await.expect("a response");
        assert_eq!(grpc_status(health.headers()), None);
        let first = first.await.expect("task").expect("a response");
        assert_eq!(grpc_status(first.headers()), None);
        let after = service.oneshot(call(GET, None)).await.expect("a response");
        assert_eq!(grpc_status(after.headers()), None, "the permit came back");
    }

    fn headers(timeout: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", timeout.parse().expect("header value"));
        headers
    }

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_spells_them() {
        let parse = |value| client_timeout(&headers(value));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "100", "123456789m", "1.5S", "-1S", "10s", "5 m"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(client_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn message_lengths_are_followed_across_frames() {
        let mut body = CappedBody::new(Body::empty(), 10);
        let mut stream = Vec::new();
        for length in [3u32, 10, 0, 7] {
            stream.push(0);
            stream.extend_from_slice(&length.to_be_bytes());
            stream.extend(std::iter::repeat_n(b'x', length as usize));
        }
        for chunk in stream.chunks(3) {
            assert_eq!(body.scan(chunk), Ok(()));
        }
        let mut over = vec![0];
        over.extend_from_slice(&11u32.to_be_bytes());
        assert_eq!(body.scan(&over[..2]), Ok(()));
        assert_eq!(body.scan(&over[2..]), Err(11));
    }
}
