//! gRPC adapters: one per service. Handlers only extract the caller, delegate to the
//! use cases in [`crate::service`], and convert errors through the one mapping.

pub mod billing;
pub mod convert;
pub mod organization;
pub mod subscription;
pub mod transfer;

use std::{future::Future, sync::Arc};

use tonic::{Request, Response, Status};

use crate::{
    auth::Caller, config::Settings, error::Result, payments::Payments,
    service::billing::usage::GroupCommit, storage::Store, telemetry::metrics::Metrics,
};

/// What every handler needs: the store, the settings and the application's metrics.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Database and clock.
    pub store: Store,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Payment gateways.
    pub payments: Payments,
    /// This application's Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Usage batches waiting for the next group ingestion transaction.
    pub usage_groups: Arc<GroupCommit>,
}

impl Ctx {
    /// A context over `store` with `settings`, the payment gateways they configure, and
    /// fresh metrics.
    pub fn new(store: Store, settings: Settings) -> Ctx {
        Ctx {
            payments: Payments::new(store.clone(), &settings.billing),
            store,
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
            usage_groups: Arc::default(),
        }
    }
}

/// The caller the auth layer put into the request.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("request reached a handler without passing the auth layer"))
}

/// Runs a use case with the caller and the request message.
pub async fn serve<Req, Resp, F, Fut>(
    ctx: &Ctx,
    request: Request<Req>,
    use_case: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(Ctx, Caller, Req) -> Fut,
    Fut: Future<Output = Result<Resp>>,
{
    let caller = caller_of(&request)?;
    use_case(ctx.clone(), caller, request.into_inner())
        .await
        .map(Response::new)
        .map_err(Status::from)
}

/// Implements RPCs by delegating to use cases through [`serve`] (written in
/// `async_trait`'s desugared form, because the attribute cannot see methods produced by
/// a macro).
macro_rules! delegate {
    ($( $method:ident($req:ident -> $resp:ident) => $use_case:path; )*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                request: tonic::Request<crate::proto::$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<crate::proto::$resp>, tonic::Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(crate::grpc::serve(&self.ctx, request, $use_case))
            }
        )*
    };
}
pub(crate) use delegate;
