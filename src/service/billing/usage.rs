//! Usage metering: RecordUsage, RecordUsageBatch and StreamUsage batches.

super::unbuilt! {
    record(RecordUsageRequest -> RecordUsageResponse);
    record_batch(RecordUsageBatchRequest -> RecordUsageBatchResponse);
}

/// StreamUsage: each message is one batch committed as it arrives.
pub async fn stream(
    ctx: crate::grpc::Ctx,
    caller: crate::auth::Caller,
    mut stream: tonic::Streaming<crate::proto::StreamUsageRequest>,
) -> crate::error::Result<crate::proto::StreamUsageResponse> {
    let first = stream.message().await.ok().flatten().unwrap_or_default();
    caller
        .authorize(&ctx.store, "organization_id", &first.organization_id)
        .await?;
    Err(crate::error::Error::Unimplemented("stream usage"))
}
