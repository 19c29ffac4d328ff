//! Rules and newtypes of the domain: no tonic, no SeaORM in these signatures.

pub mod billing;
pub mod clock;
pub mod events;
pub mod filter;
pub mod ids;
pub mod money;
pub mod org;
pub mod paging;
pub mod plans;
pub mod slug;
pub mod subscription;
pub mod text;
