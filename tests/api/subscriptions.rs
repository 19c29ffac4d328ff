//! subscriptions (issue 4).
