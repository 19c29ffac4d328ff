//! accounts (issue 4).
