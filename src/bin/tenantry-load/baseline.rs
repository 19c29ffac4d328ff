//! The baseline server: tonic with tenantry's transport settings (`TCP_NODELAY` on
//! accepted connections) and handlers that do no work, so its rate is the framework's
//! ceiling on this machine in this run.
//!
//! - `grpc.health.v1.Health/Check`: the ceiling for a small unary answer.
//! - `tenantry.load.Baseline/GetOrganization` and `/ListOrganizations`: answer a copy of
//!   a real tenantry answer recorded during setup (sent with `PrimeGet` / `PrimeList`),
//!   so the reads can also be compared with the same bytes served by bare tonic.

use std::{
    convert::Infallible,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use tenantry::proto::{
    GetOrganizationRequest, GetOrganizationResponse, ListOrganizationsRequest,
    ListOrganizationsResponse,
};
use tonic::{Request, Response, Status, body::Body, transport::Channel};
use tonic_prost::ProstCodec;

const SERVICE: &str = "tenantry.load.Baseline";
/// Path of the recorded GetOrganization answer.
pub const GET: &str = "/tenantry.load.Baseline/GetOrganization";
/// Path of the recorded ListOrganizations answer.
pub const LIST: &str = "/tenantry.load.Baseline/ListOrganizations";
const PRIME_GET: &str = "/tenantry.load.Baseline/PrimeGet";
const PRIME_LIST: &str = "/tenantry.load.Baseline/PrimeList";

/// The recorded answers.
#[derive(Clone, Default)]
struct Replay {
    get: Arc<RwLock<GetOrganizationResponse>>,
    list: Arc<RwLock<ListOrganizationsResponse>>,
}

impl tonic::server::NamedService for Replay {
    const NAME: &'static str = SERVICE;
}

/// Answers every request with a copy of the recorded message.
struct Answer<M>(Arc<RwLock<M>>);

impl<Req: Send + 'static, M: Clone + Default + Send + Sync + 'static>
    tonic::server::UnaryService<Req> for Answer<M>
{
    type Response = M;
    type Future = BoxFuture<'static, Result<Response<M>, Status>>;

    fn call(&mut self, _: Request<Req>) -> Self::Future {
        let answer = self.0.read().map(|m| m.clone()).unwrap_or_default();
        Box::pin(async move { Ok(Response::new(answer)) })
    }
}

/// Stores the request as the recorded message.
struct Record<M>(Arc<RwLock<M>>);

impl<M: Send + Sync + 'static> tonic::server::UnaryService<M> for Record<M> {
    type Response = ();
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;

    fn call(&mut self, request: Request<M>) -> Self::Future {
        if let Ok(mut slot) = self.0.write() {
            *slot = request.into_inner();
        }
        Box::pin(async { Ok(Response::new(())) })
    }
}

async fn unary<Req, Res, S>(service: S, request: http::Request<Body>) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Res: prost::Message + Send + 'static,
    S: tonic::server::UnaryService<Req, Response = Res>,
{
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Res, Req>::default());
    grpc.unary(service, request).await
}

impl tower_service::Service<http::Request<Body>> for Replay {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (get, list) = (self.get.clone(), self.list.clone());
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            Ok(match path.as_str() {
                GET => unary::<GetOrganizationRequest, _, _>(Answer(get), request).await,
                LIST => unary::<ListOrganizationsRequest, _, _>(Answer(list), request).await,
                PRIME_GET => unary(Record(get), request).await,
                PRIME_LIST => unary(Record(list), request).await,
                _ => Status::unimplemented(format!("no {path} here")).into_http(),
            })
        })
    }
}

/// Serves the baseline on 127.0.0.1:`port` until killed.
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(Replay::default())
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

/// One unary call of `path` on `channel` with the generated messages' codec.
pub async fn call<Req, Res>(
    channel: Channel,
    path: &'static str,
    message: Req,
) -> Result<Res, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = ProstCodec::<Req, Res>::default();
    grpc.unary(
        Request::new(message),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(Response::into_inner)
}

/// Records tenantry's answers on the baseline server.
pub async fn prime(
    channel: Channel,
    get: GetOrganizationResponse,
    list: ListOrganizationsResponse,
) -> anyhow::Result<()> {
    call::<_, ()>(channel.clone(), PRIME_GET, get).await?;
    call::<_, ()>(channel, PRIME_LIST, list).await?;
    Ok(())
}
