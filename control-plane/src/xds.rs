//! The xDS side: snapshots, per-stream state, the ADS gRPC server and node status.

pub mod server;
pub mod snapshot;
pub mod status;
pub mod stream;

use std::sync::Arc;

use tokio::sync::watch;

pub use server::XdsServer;
pub use snapshot::Snapshot;

/// Where streams get snapshots from. `None` until the first consistent
/// snapshot exists: until then nothing is served, never an empty config.
pub trait SnapshotSource: Send + Sync + 'static {
    fn watch(&self) -> watch::Receiver<Option<Arc<Snapshot>>>;
}

impl SnapshotSource for watch::Receiver<Option<Arc<Snapshot>>> {
    fn watch(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.clone()
    }
}
