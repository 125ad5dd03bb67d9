//! Services, ports, proxy options, concurrency and health checks (`config.services[]`, `config.checks`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::enums::{Autostop, CheckKind, ConcurrencyType};
use crate::serde_util::null_default;

/// A service the proxy routes to a Machine (`config.services[]`).
///
/// `protocol` and `internal_port` are always written, as the reference does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineService {
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: String,
    /// Port the app listens on inside the Machine.
    #[serde(default)]
    pub internal_port: i64,
    /// What to do with idle Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<Autostop>,
    /// Start stopped Machines on incoming traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// Machines autostop must leave running (primary region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<i64>,
    /// Public ports mapped to `internal_port`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<MachinePort>,
    /// Service health checks.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub checks: Vec<MachineServiceCheck>,
    /// Load-balancing limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<MachineServiceConcurrency>,
    /// Pins traffic to one instance key (blue/green deploys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_instance_key: Option<String>,
    /// Human-readable reason for `force_instance_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_instance_description: Option<String>,
}

/// One public port or port range of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachinePort {
    /// Single public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// First port of a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_port: Option<i64>,
    /// Last port of a range (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
    /// Proxy handlers in order: `tls`, `http`, `proxy_proto`, `pg_tls`, `edge_http`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub handlers: Vec<String>,
    /// Redirect plain HTTP to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_https: Option<bool>,
    /// TLS termination options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_options: Option<TlsOptions>,
    /// HTTP handler options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_options: Option<HttpOptions>,
    /// PROXY protocol options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_proto_options: Option<ProxyProtoOptions>,
}

/// TLS handler options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TlsOptions {
    /// ALPN protocols offered (`h2`, `http/1.1`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub alpn: Vec<String>,
    /// Allowed TLS versions (`TLSv1.2`, `TLSv1.3`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub versions: Vec<String>,
    /// Serve a self-signed certificate when no other matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_self_signed: Option<bool>,
}

/// HTTP handler options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpOptions {
    /// Compress responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<bool>,
    /// Speak HTTP/2 cleartext to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_backend: Option<bool>,
    /// Idle connection timeout, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u32>,
    /// Timeout for reading request headers, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_read_timeout: Option<u32>,
    /// Response rewriting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponseOptions>,
    /// fly-replay caching rules.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub replay_cache: Vec<ReplayCache>,
}

/// Response rewriting options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpResponseOptions {
    /// Header edits: `false` removes the header, a string sets it, an array sets several values.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, serde_json::Value>,
    /// Do not add the proxy's own response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pristine: Option<bool>,
}

/// A fly-replay cache rule. All fields but `allow_bypass` are always written (fly-go).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplayCache {
    /// Request path prefix the rule covers.
    #[serde(default)]
    pub path_prefix: String,
    /// How long a cached replay decision lives.
    #[serde(default)]
    pub ttl_seconds: i64,
    /// `cookie` or `header`.
    #[serde(default)]
    pub r#type: String,
    /// Cookie or header name the cache is keyed on.
    #[serde(default)]
    pub name: String,
    /// Let clients bypass the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_bypass: Option<bool>,
}

/// PROXY protocol options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyProtoOptions {
    /// `v1` or `v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Concurrency limits used for load balancing and autostart/autostop.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineServiceConcurrency {
    /// `connections` or `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<ConcurrencyType>,
    /// Above this the proxy prefers other Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<i64>,
    /// The proxy never exceeds this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<i64>,
}

/// A health check: a value of `config.checks` (top-level, may carry `kind`) or an
/// item of `services[].checks` (where `kind` stays `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineCheck {
    /// `tcp` or `http` (see [`crate::CheckType`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// Port to connect to; often the service's `internal_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time after which a check counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time after boot before failures count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
    /// HTTP method (http checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path (http checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http` or `https` (http checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Skip TLS certificate verification (https checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    /// SNI / verification host name (https checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Extra request headers (http checks).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub headers: Vec<MachineHttpHeader>,
    /// Top-level checks only: `informational` (default) or `readiness`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckKind>,
}

/// A service check; the same shape as [`MachineCheck`] with `kind` left `None`.
pub type MachineServiceCheck = MachineCheck;

/// One HTTP header sent by a check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineHttpHeader {
    /// Header name.
    #[serde(default)]
    pub name: String,
    /// Header values.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
}
