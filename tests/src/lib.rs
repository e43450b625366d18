//! End-to-end harness: real Envoy, the real Gatehouse binaries and real HTTP
//! upstreams, all on loopback ephemeral ports.
//!
//! Every process gets its own directory under the system temp dir, readiness
//! is awaited (never slept for), and when a test panics each process prints
//! its log tail and Envoy its `/config_dump`, so a failure explains itself.
//!
//! Rooms: [`process`] (names, ports, waiting), [`control_plane`],
//! [`envoy`], [`upstream`] (real HTTP upstreams that can misbehave),
//! [`sidecar`] (ext-authz, ratelimit-service), [`postgres`], [`websocket`]
//! (WebSocket upstreams and clients), [`ctl`] (the real `gatehousectl`), and
//! [`stack`], the one fixture most tests start from.

pub mod ads;
pub mod broker;
pub mod control_plane;
pub mod ctl;
pub mod envoy;
pub mod flood;
pub mod grpc;
pub mod load;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod redis;
pub mod sidecar;
pub mod stack;
pub mod tcp_proxy;
pub mod tokens;
pub mod upstream;
pub mod websocket;

pub use reqwest;

pub use control_plane::{ControlPlane, ControlPlaneOptions};
pub use envoy::{Answer, Envoy, XdsVariant, bootstrap_yaml};
pub use pki::{Pki, tls_fixture};
pub use postgres::postgres_database;
pub use process::{
    client, envoy_bin, eventually, free_port, gatehouse_bin, rss_kb, scratch_dir, unique,
    workspace_root,
};
pub use sidecar::{ExtAuthz, FAKETIME_LIB, Sidecar};
pub use stack::Stack;
pub use tcp_proxy::TcpProxy;
pub use upstream::{Behaviour, Received, Upstream, probe, service_over};
