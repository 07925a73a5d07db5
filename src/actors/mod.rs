//! xenith's actors. Each folder is one actor (or family), the same shape
//! each time: its state, its messages, its handlers, and a small typed
//! handle that hides its `Addr` and turns mailbox failures into the
//! actor's own error.
//!
//! Subsystems to come are actors with their own folder here: storage
//! repositories (a `storage` supervisor, one actor per SR), tasks, migration
//! and metrics, each reaching the host through a driver trait under
//! src/drivers.

pub mod agent;
pub mod backend;
pub mod child;
pub mod console;
pub mod domain;
pub mod emulator;
pub mod events;
pub mod host;
pub mod inventory;
pub mod slot;
pub mod storage;
pub mod supervisor;
pub mod tasks;
pub mod xenstored;

pub use child::ChildId;

/// Fault injection (`fault.inject` kind panic): the receiving actor's
/// handler panics. Every supervised actor of a VM answers it.
#[derive(Debug, Clone, Copy)]
pub struct InjectPanic;

impl actix::Message for InjectPanic {
    type Result = ();
}

/// Makes an actor answer [`InjectPanic`] by panicking, naming itself with
/// `$describe` (a function of the actor).
macro_rules! panics_on_injection {
    ($actor:ty, $describe:expr) => {
        impl actix::Handler<$crate::actors::InjectPanic> for $actor {
            type Result = ();

            fn handle(
                &mut self,
                _msg: $crate::actors::InjectPanic,
                _ctx: &mut Self::Context,
            ) -> Self::Result {
                let describe: fn(&$actor) -> String = $describe;
                panic!("injected panic in {}", describe(self));
            }
        }
    };
}
pub(crate) use panics_on_injection;
