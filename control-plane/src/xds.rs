//! The xDS side: snapshots, what the fleet is served (rollout), per-stream
//! state, the ADS gRPC server, who may use it, node status, and the guard
//! against taking a node backwards.

pub mod auth;
pub mod guard;
pub mod limits;
pub mod rollout;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod stream;

pub use rollout::Rollout;
pub use server::XdsServer;
pub use snapshot::Snapshot;
