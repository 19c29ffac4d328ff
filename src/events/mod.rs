//! Domain events: the transactional outbox, its sequencer, and delivery to webhook
//! endpoints and by email.
//!
//! A change writes its events with [`outbox::emit`] in its own transaction. The
//! [`dispatcher`] of each replica then, in rounds (woken by local commits, else on the
//! poll interval):
//! 1. numbers new events ([`outbox::sequence`]), one organization's in the order of its
//!    changes: one sequencer at a time holds the `event_sequence` row lock, so
//!    positions are gap-free and a reader that saw position N has seen every position
//!    below it; the same transaction fans each event out to the matching webhook
//!    endpoints (one delivery row per endpoint);
//! 2. delivers due webhook deliveries ([`webhooks::deliver_due`]) and emails
//!    ([`email::deliver_due`]), each claimed by one dispatcher at a time through a lease
//!    taken by a conditional update, retried with exponential backoff, dead-lettered
//!    after the last attempt;
//! 3. expires tenant transfers left undecided.
//!
//! Delivery is at least once: a receiver deduplicates by the event id header.

pub mod dispatcher;
pub mod email;
pub mod lease;
pub mod outbox;
pub mod webhooks;
