//! The tower layer that wraps every gRPC call in a span and records its metrics.
