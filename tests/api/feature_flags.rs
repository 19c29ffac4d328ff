//! feature_flags (issue 4).
