//! renewals (issue 4).
