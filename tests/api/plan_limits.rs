//! plan_limits (issue 4).
