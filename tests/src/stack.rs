//! The fixture most end-to-end tests start from: a control plane, an Envoy
//! it configures, and, when asked, ext-authz, ratelimit-service and an
//! `orders` upstream, each on its own ephemeral ports.
//!
//! ```ignore
//! let g = Stack::new().ext_authz(&[]).ratelimit(&[]).orders().start().await;
//! g.envoy.until_answer("/orders", &[], 401).await;
//! ```

use std::{net::SocketAddr, path::PathBuf};

use crate::{
    control_plane::{ControlPlane, ControlPlaneOptions},
    envoy::{Envoy, XdsVariant},
    process::{free_port, scratch_dir},
    sidecar::{ExtAuthz, Sidecar},
    upstream::Upstream,
};

type Tweak = Box<dyn FnOnce(&mut ControlPlaneOptions) + Send>;

/// What to start; see [`Stack::new`].
#[derive(Default)]
pub struct StackBuilder {
    variant: XdsVariant,
    ext_authz: Option<Vec<(String, String)>>,
    ratelimit: Option<Vec<String>>,
    xds_token: Option<String>,
    access_log: bool,
    orders: bool,
    routes: Vec<(String, String, String)>,
    tweaks: Vec<Tweak>,
}

impl StackBuilder {
    /// Envoy speaks delta xDS (state of the world by default).
    pub fn variant(mut self, variant: XdsVariant) -> Self {
        self.variant = variant;
        self
    }

    /// Starts ext-authz with this extra environment (secrets it resolves).
    pub fn ext_authz(mut self, env: &[(&str, &str)]) -> Self {
        self.ext_authz = Some(
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }

    /// Starts ratelimit-service with these extra flags (a Redis URL, say).
    pub fn ratelimit(mut self, args: &[&str]) -> Self {
        self.ratelimit = Some(args.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    /// The control plane requires `token`; Envoy and ext-authz present it.
    pub fn xds_token(mut self, token: &str) -> Self {
        self.xds_token = Some(token.to_owned());
        self
    }

    /// Envoy writes an access log (printed when a test fails).
    pub fn access_log(mut self) -> Self {
        self.access_log = true;
        self
    }

    /// Starts an upstream named `orders` and registers it as service `orders`.
    pub fn orders(mut self) -> Self {
        self.orders = true;
        self
    }

    /// Adds route `name` sending `path_prefix` to `service` once started.
    pub fn route(mut self, name: &str, path_prefix: &str, service: &str) -> Self {
        self.routes
            .push((name.to_owned(), path_prefix.to_owned(), service.to_owned()));
        self
    }

    /// Changes the control plane's options before it starts.
    pub fn configure(
        mut self,
        tweak: impl FnOnce(&mut ControlPlaneOptions) + Send + 'static,
    ) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    pub async fn start(self) -> Stack {
        let proxy_port = free_port();
        let ext_port = self.ext_authz.as_ref().map(|_| free_port());
        let rl_port = self.ratelimit.as_ref().map(|_| free_port());
        let mut options = ControlPlaneOptions::new(proxy_port);
        let access_log: Option<PathBuf> = self
            .access_log
            .then(|| scratch_dir("gatehouse_access").join("access.log"));
        options.access_log.clone_from(&access_log);
        options.xds_token.clone_from(&self.xds_token);
        options.ext_authz_addr = ext_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        options.ratelimit_addr = rl_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        for tweak in self.tweaks {
            tweak(&mut options);
        }
        let cp = ControlPlane::start(options).await;
        let token_env: Vec<(String, String)> = self
            .xds_token
            .iter()
            .map(|t| ("GATEHOUSE_XDS_TOKEN".to_owned(), t.clone()))
            .collect();
        let ext = match (self.ext_authz, ext_port) {
            (Some(env), Some(port)) => {
                let env: Vec<(&str, &str)> = env
                    .iter()
                    .chain(&token_env)
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                Some(ExtAuthz::start(cp.xds, port, &env).await)
            }
            _ => None,
        };
        let limiter = match (self.ratelimit, rl_port) {
            (Some(args), Some(port)) => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Some(Sidecar::ratelimit(cp.xds, port, &args).await)
            }
            _ => None,
        };
        let envoy = match &self.xds_token {
            Some(token) => Envoy::start_with_xds_token(cp.xds, proxy_port, token).await,
            None => {
                Envoy::start_with_access_log(cp.xds, proxy_port, self.variant, access_log).await
            }
        };
        let orders = if self.orders {
            let upstream = Upstream::start("orders").await;
            cp.apply("/v1/services/orders", upstream.service("orders"))
                .await;
            Some(upstream)
        } else {
            None
        };
        for (name, prefix, service) in &self.routes {
            cp.apply(
                &format!("/v1/routes/{name}"),
                serde_json::json!({
                    "match": {"path_prefix": prefix},
                    "destination": {"service": service},
                }),
            )
            .await;
        }
        Stack {
            cp,
            envoy,
            ext,
            limiter,
            orders,
        }
    }
}

/// A running gateway: see [`StackBuilder`].
pub struct Stack {
    pub cp: ControlPlane,
    pub envoy: Envoy,
    pub ext: Option<ExtAuthz>,
    pub limiter: Option<Sidecar>,
    /// The `orders` upstream, when asked for.
    pub orders: Option<Upstream>,
}

impl Stack {
    /// A control plane and an Envoy; add parts with the builder's methods.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> StackBuilder {
        StackBuilder::default()
    }

    /// Where the authentication tests start: ext-authz (with `env`), Envoy,
    /// the `orders` upstream and a public route to it at `/public`.
    pub async fn auth(env: &[(&str, &str)]) -> Stack {
        Stack::new()
            .ext_authz(env)
            .orders()
            .route("public", "/public", "orders")
            .start()
            .await
    }

    /// ext-authz (started with [`StackBuilder::ext_authz`]).
    pub fn ext_authz(&self) -> &ExtAuthz {
        self.ext.as_ref().expect("the stack runs ext-authz")
    }

    pub fn ext_authz_mut(&mut self) -> &mut ExtAuthz {
        self.ext.as_mut().expect("the stack runs ext-authz")
    }

    /// ratelimit-service (started with [`StackBuilder::ratelimit`]).
    /// `/orders` behind API keys with `per_minute` requests per consumer,
    /// answering alice: her key.
    pub async fn limited_orders(&self, per_minute: u32) -> String {
        let key = self.cp.consumer_key("alice").await;
        self.cp.api_key_route("orders", "/orders", "orders").await;
        self.cp.per_consumer_limit(per_minute, "orders").await;
        self.envoy
            .until_answer("/orders", &[("x-api-key", &key)], 200)
            .await;
        key
    }

    /// A stack with ratelimit-service (`limiter_args`) and a public
    /// `/orders` route under rate-limit policy `fleet` (`policy`, which
    /// names the route), served by every node.
    pub async fn orders_under_policy(limiter_args: &[&str], policy: serde_json::Value) -> Stack {
        let g = Stack::new()
            .ratelimit(limiter_args)
            .orders()
            .route("orders", "/orders", "orders")
            .start()
            .await;
        let version = g.cp.apply("/v1/rate-limit-policies/fleet", policy).await;
        g.cp.until_converged(version).await;
        g
    }

    pub fn limiter(&self) -> &Sidecar {
        self.limiter
            .as_ref()
            .expect("the stack runs ratelimit-service")
    }
}
