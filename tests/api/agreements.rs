//! agreements (issue 4).
