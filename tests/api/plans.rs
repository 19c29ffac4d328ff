//! plans (issue 4).
