//! One SR's actor: the one owner of that SR's VDI records. It serialises
//! operations per VDI (two snapshots of one VDI never race; different VDIs
//! go on in parallel, each on the blocking pool), refuses to destroy what
//! a VM uses, adopts volumes it did not make (`sr.scan`), and, at each
//! (re)start, reads its records again and settles what a crash cut short.

mod handle;
mod handlers;
mod messages;
mod ops;
mod recover;
mod scan;
mod state;
mod uses;

pub use handle::SrHandle;
pub use messages::{Lease, Source};
pub use state::SrActor;
