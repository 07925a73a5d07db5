//! xenith's actors. Each folder is one actor (or family): its state, its
//! messages, its handlers, and a small typed handle that hides its `Addr`.

pub mod backend;
pub mod domain;
pub mod host;
pub mod slot;
pub mod supervisor;
pub mod xenstored;
