//! addons (issue 4).
