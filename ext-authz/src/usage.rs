//! Reports API key use to the control plane (`gatehouse.auth.v1.KeyUsage`)
//! every interval: only keys used since the last successful report, so an
//! idle gateway sends nothing. The hot path only stores a timestamp.

use std::{collections::HashMap, sync::atomic::Ordering, time::Duration};

use gatehouse_proto::auth::{KeyUsageReport, KeyUse, key_usage_client::KeyUsageClient};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::server::SharedState;

#[derive(Debug, Clone)]
pub struct Reporting {
    /// The control plane's xDS address (the service is served there).
    pub endpoint: String,
    pub interval: Duration,
    /// The control plane's xDS token, if it requires one.
    pub token: Option<gatehouse_xds_client::XdsToken>,
    /// The CA of an `https://` endpoint.
    pub ca: Option<gatehouse_xds_client::XdsCa>,
}

impl Reporting {
    /// A channel to the control plane, connected on first use; `None` for
    /// an endpoint that is not a URI.
    pub fn channel(&self) -> Option<tonic::transport::Channel> {
        let endpoint = gatehouse_xds_client::endpoint(&self.endpoint, self.ca.as_ref()).ok()?;
        Some(
            endpoint
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .connect_lazy(),
        )
    }
}

pub async fn report(reporting: Reporting, state: SharedState, stop: CancellationToken) {
    let Some(channel) = reporting.channel() else {
        return;
    };
    let mut client = KeyUsageClient::new(channel);
    let mut reported: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(reporting.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(current) = state.load_full() else {
            continue;
        };
        let uses: Vec<KeyUse> = current
            .keys
            .iter()
            .filter_map(|(id, key)| {
                let last = key.last_used_ms.load(Ordering::Relaxed);
                (last > reported.get(id).copied().unwrap_or(0)).then(|| KeyUse {
                    id: id.clone(),
                    last_used_ms: last,
                })
            })
            .collect();
        if uses.is_empty() {
            continue;
        }
        let mut request = tonic::Request::new(KeyUsageReport { uses: uses.clone() });
        if let Some(token) = &reporting.token {
            token.authorize(&mut request);
        }
        match client.report(request).await {
            Ok(_) => {
                for used in uses {
                    reported.insert(used.id, used.last_used_ms);
                }
            }
            // Retried with the next report; usage is advisory.
            Err(e) => debug!(error = %e, "key usage report failed"),
        }
    }
}
