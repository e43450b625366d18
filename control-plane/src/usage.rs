//! API key usage reported by ext-authz (`gatehouse.auth.v1.KeyUsage`),
//! recorded as each key's last use. Not configuration: no version, no
//! history. Served on the xDS port next to ADS.

use gatehouse_proto::auth::{
    KeyUsageReply, KeyUsageReport,
    key_usage_server::{KeyUsage, KeyUsageServer},
};

use crate::store::Store;

/// Most uses accepted in one report.
const MAX_USES: usize = 100_000;

pub struct KeyUsageService {
    store: Store,
}

impl KeyUsageService {
    pub fn server(store: Store) -> KeyUsageServer<Self> {
        KeyUsageServer::new(Self { store })
    }
}

fn is_key_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tonic::async_trait]
impl KeyUsage for KeyUsageService {
    async fn report(
        &self,
        request: tonic::Request<KeyUsageReport>,
    ) -> Result<tonic::Response<KeyUsageReply>, tonic::Status> {
        let uses = request.into_inner().uses;
        if uses.len() > MAX_USES {
            return Err(tonic::Status::invalid_argument(format!(
                "at most {MAX_USES} uses per report"
            )));
        }
        let used: Vec<(String, i64)> = uses
            .into_iter()
            .filter(|u| is_key_id(&u.id) && u.last_used_ms > 0)
            .map(|u| (u.id, u.last_used_ms))
            .collect();
        self.store.record_key_usage(&used).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot record API key usage");
            tonic::Status::unavailable("store unavailable")
        })?;
        Ok(tonic::Response::new(KeyUsageReply {}))
    }
}
