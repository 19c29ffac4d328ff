//! The Prometheus registry and the collectors behind `GET /metrics`.
