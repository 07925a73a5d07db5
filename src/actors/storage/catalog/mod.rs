//! The storage catalog: the one owner of the SRs xenith knows. It creates
//! them (checked, made ready on the host, recorded, their actor started
//! under `srs`), takes them back at start from their records, and ends
//! them (`sr.destroy`, `sr.forget`). Its handle reaches each SR's actor for
//! the VDIs.

mod handle;
mod handlers;
mod messages;
mod state;
mod vms;

pub use handle::StorageHandle;
pub use state::{CatalogActor, CatalogEnv};
