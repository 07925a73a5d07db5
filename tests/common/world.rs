//! An in-process world for tests: the embedded xenstored under a root
//! supervisor, a simulated host whose guests act through it, and a
//! privileged (dom0) xenstore client.

use std::sync::Arc;
use std::time::Duration;

use xenith::actors::supervisor::{RootSupervisor, Strategy, SupervisorFlags};
use xenith::actors::xenstored::XenstoredHandle;
use xenith::config::SimConfig;
use xenith::drivers::sim::SimHypervisor;
use xenith::drivers::xenstore::XsClient;
use xenith::drivers::Hv;
use xenith::xenstored::Quota;

pub struct World {
    pub root: RootSupervisor,
    pub store: XenstoredHandle,
    pub sim: Arc<SimHypervisor>,
    /// The simulated hypervisor through the async adapter (hypercalls
    /// block: they never run on the runtime's threads).
    pub hv: Hv,
    pub xs: XsClient,
    _dir: tempfile::TempDir,
}

impl World {
    /// Must run inside an actix system (`#[actix::test]`).
    pub async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let (spec, store) =
            xenith::daemon::xenstored_spec(dir.path().join("xs.sock"), Quota::default());
        let flags = SupervisorFlags::new(Strategy::OneForOne, 10, Duration::from_secs(10));
        let root = RootSupervisor::start("root", flags, vec![spec])
            .await
            .unwrap();
        let sim = Arc::new(SimHypervisor::new(SimConfig {
            total_mib: 8192,
            dom0_mib: 1024,
            cpus: 4,
        }));
        sim.attach_guests(Arc::new(store.clone()), tokio::runtime::Handle::current());
        let xs = XsClient::connect_embedded(&store, None).await.unwrap();
        World {
            root,
            store,
            hv: Hv::new(sim.clone()),
            sim,
            xs,
            _dir: dir,
        }
    }
}
