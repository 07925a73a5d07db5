//! Storage: a `storage` supervisor (rest_for_one) holding `srs` (one actor
//! per SR, one_for_one: an SR's trouble stays its own) and the catalog
//! (which starts them). An SR's actor owns its VDI records; the catalog
//! owns the list of SRs. Their drivers are under src/drivers/storage; the
//! records and DTOs under src/storage.

pub mod catalog;
mod error;
pub mod sr;
pub mod view;

pub use catalog::{CatalogActor, CatalogEnv, StorageHandle};
pub use error::SrError;
pub use sr::{SrActor, SrHandle};
pub use view::{ActiveVdi, ScanResult, SrView, VdiRef, VdiView};

use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::{ChildSpec, Strategy, SupervisorFlags};

/// `srs`: one actor per SR, restarted one by one.
pub const SRS_FLAGS: SupervisorFlags = SupervisorFlags {
    strategy: Strategy::OneForOne,
    max_restarts: 100,
    period: std::time::Duration::from_secs(60),
};

/// `storage`: `srs`, then the catalog (a restarted `srs` is empty, and the
/// catalog that follows starts every SR again).
pub const STORAGE_FLAGS: SupervisorFlags = SupervisorFlags {
    strategy: Strategy::RestForOne,
    max_restarts: 3,
    period: std::time::Duration::from_secs(60),
};

/// The `storage` subtree.
pub fn storage_spec(env: CatalogEnv, catalog: AddrSlot<CatalogActor>) -> ChildSpec {
    let srs = AddrSlot::new();
    let events = env.events.clone();
    ChildSpec::supervisor_observed(
        "storage",
        STORAGE_FLAGS,
        vec![
            ChildSpec::supervisor_observed(
                "srs",
                SRS_FLAGS,
                vec![],
                Some(srs.clone()),
                Some(events.clone()),
            ),
            CatalogActor::spec(env, srs, catalog),
        ],
        None,
        Some(events),
    )
}
