//! `hangar-api`: the Machines API v1 (the control plane), wire-compatible with the reference
//! (PLATFORM.md §2).
//!
//! Owns HTTP: authentication (bearer tokens scoped to an org), request parsing at the edge
//! into typed commands, the error mapping of §2.1, leases, and turning user actions into
//! desired state in the store. It never runs a machine itself: it records the state change
//! (checked by `hangar-domain`'s state machine) and a pending operation, and the host agent,
//! watching the store, carries it out. `wait` watches the store for the agent's reports.
//!
//! Must not: touch containers, namespaces or images; depend on another service crate.

mod auth;
mod error;
mod json;
mod machine_view;
mod routes;
mod util;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hangar_domain::MachineHost;
use hangar_store::Store;

pub use error::ApiError;
pub use json::decode_body;
pub use util::{hash_token, new_token};

/// Settings of the API service.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Region this host serves; machines created without a region go here.
    pub region: String,
    /// Every region known to the platform (for `/platform/regions` and validation).
    pub regions: Vec<String>,
    /// 32-bit host id used in 6PN addresses.
    pub host_id: u32,
    /// Host name recorded on machines.
    pub host_name: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest image archive accepted by `POST /v1/apps/{app}/images`.
    pub max_image_bytes: u64,
    /// Per-token request budget (requests per second, burst); `None` = unlimited.
    pub rate_limit: Option<(u32, u32)>,
    /// Apps answer at `<app>.<domain>` (the CNAME target of custom hostnames).
    pub domain: String,
    /// Whether the proxy issues certificates over ACME (otherwise ACME requests are kept and
    /// reported as waiting for it).
    pub acme_enabled: bool,
    /// The zone answering DNS-01 challenges (`hangard --acme-dns-zone`): custom hostnames'
    /// `_acme-challenge` CNAME targets are in it. `None`: no DNS-01 (and no wildcard
    /// certificates over ACME).
    pub acme_dns_zone: Option<String>,
    /// The WireGuard gateway peers use (`None`: WireGuard is off; creating a peer is 501).
    pub wireguard: Option<WireguardGateway>,
    /// The host's public addresses (where the proxy answers), recorded by `v6` and
    /// `shared_v4` IP assignments; without one of a family, allocating it is refused with
    /// how to configure it.
    pub public_ips: Vec<std::net::IpAddr>,
}

/// The host's WireGuard gateway, as peers' configs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardGateway {
    /// `host:port` peers connect to (`Endpoint =`).
    pub endpoint: String,
    /// The gateway's public key (base64).
    pub public_key: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            region: "local".into(),
            regions: vec!["local".into()],
            host_id: 1,
            host_name: "localhost".into(),
            max_body_bytes: 1024 * 1024,
            max_image_bytes: 8 << 30,
            rate_limit: None,
            domain: "localhost".into(),
            acme_enabled: false,
            acme_dns_zone: None,
            wireguard: None,
            public_ips: Vec::new(),
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) limiter: Arc<auth::RateLimiter>,
    pub(crate) host: Option<Arc<dyn MachineHost>>,
    pub(crate) sealer: Option<Arc<hangar_store::Sealer>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.config)
            .finish()
    }
}

impl ApiState {
    /// State over a store.
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let limiter = Arc::new(auth::RateLimiter::new(config.rate_limit));
        Self {
            store,
            config: Arc::new(config),
            limiter,
            host: None,
            sealer: None,
        }
    }

    /// Seals the private keys of imported certificates with `sealer` (without one, importing
    /// a certificate is 501).
    pub fn with_sealer(mut self, sealer: Arc<hangar_store::Sealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Answers exec, ps and logs through `host` (without one they are 501).
    pub fn with_host(mut self, host: Arc<dyn MachineHost>) -> Self {
        self.host = Some(host);
        self
    }
}

/// The router with every route of the API.
pub fn router(state: ApiState) -> Router {
    routes::router(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
