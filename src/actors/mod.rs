//! xenith's actors. Each folder is one actor (or family): its state, its
//! messages, its handlers, and a small typed handle that hides its `Addr`.

pub mod agent;
pub mod backend;
pub mod console;
pub mod domain;
pub mod emulator;
pub mod events;
pub mod host;
pub mod slot;
pub mod supervisor;
pub mod xenstored;

/// Fault injection (`fault.inject` kind panic): the receiving actor's
/// handler panics. Every supervised actor of a VM answers it.
#[derive(Debug, Clone, Copy)]
pub struct InjectPanic;

impl actix::Message for InjectPanic {
    type Result = ();
}
