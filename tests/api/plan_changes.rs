//! plan_changes (issue 4).
