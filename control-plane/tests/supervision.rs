//! The path from the store to Envoy is watched: when the sync loop dies (here
//! a store that panics on load), the control plane stops with an error, and
//! so the process exits non-zero, instead of leaving Envoy on a frozen
//! configuration.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::{sync::Arc, time::Duration};

use clap::Parser;
use futures_core::future::BoxFuture;
use gatehouse_control_plane::{
    ControlPlane, StartError,
    config::Config,
    model::ConfigState,
    store::{Committed, DatabaseUrl, RejectedResource, StoreError},
    sync::ConfigSource,
};
use tokio::sync::watch;

/// Answers like an empty store, except that loading the configuration panics.
struct PanicsOnLoad(watch::Sender<Committed>);

impl ConfigSource for PanicsOnLoad {
    fn describe(&self) -> String {
        "a store that panics on load".into()
    }
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn load(&self) -> BoxFuture<'_, Result<ConfigState, StoreError>> {
        Box::pin(async { panic!("the store broke while loading") })
    }
    fn version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
    fn state_at(&self, _: u64) -> BoxFuture<'_, Result<(u64, ConfigState), StoreError>> {
        Box::pin(async { Ok((0, ConfigState::default())) })
    }
    fn rejections(&self) -> BoxFuture<'_, Result<Vec<RejectedResource>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn rejection_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
    fn subscribe(&self) -> watch::Receiver<Committed> {
        self.0.subscribe()
    }
    fn notifications(&self) -> Option<DatabaseUrl> {
        None
    }
}

#[tokio::test]
async fn a_sync_loop_that_dies_stops_the_control_plane() {
    let dir = std::env::temp_dir().join(format!("gatehouse_supervision_{}", std::process::id()));
    let config = Config::parse_from([
        "gatehouse-control-plane",
        "--admin-addr=127.0.0.1:0",
        "--xds-addr=127.0.0.1:0",
        "--validate-with-envoy=off",
        &format!("--data-dir={}", dir.display()),
    ]);
    let control_plane = ControlPlane::bind(&config)
        .await
        .unwrap()
        .with_config_source(Arc::new(PanicsOnLoad(
            watch::channel(Committed::default()).0,
        )));
    let stopped = tokio::time::timeout(
        Duration::from_secs(20),
        control_plane.run(std::future::pending(), Duration::from_secs(1)),
    )
    .await
    .expect("the control plane stops by itself");
    match stopped {
        Err(e @ StartError::Serve("sync", _)) => {
            assert!(e.to_string().contains("panicked"), "{e}");
            assert!(!e.is_config(), "a runtime failure: exit 1, not 64");
        }
        other => panic!("expected the sync task's failure, got {other:?}"),
    }
}
