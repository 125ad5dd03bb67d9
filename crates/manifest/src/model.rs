//! The typed fly.toml model, after legacy shapes have been patched (PLATFORM.md §1.3–1.15).
//!
//! Field names are the TOML keys. Everything optional is `Option`/empty and omitted on output,
//! so `show` prints only what the user set (normalised), and parsing that output gives back an
//! equal model. Defaults the reference applies (`kill_timeout` 5 s, strategy `rolling`, …)
//! are applied by the accessors and by the machine conversion, not stored.

use std::collections::BTreeMap;

use hangar_api_types::{Duration, HttpOptions, MachinePort, MachineServiceConcurrency, TlsOptions};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole fly.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// App name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Region new machines go to; sets `PRIMARY_REGION`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
    /// Signal sent to stop a machine (default `SIGINT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_signal: Option<String>,
    /// Time between the stop signal and SIGKILL (default 5 s, max 300 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<Duration>,
    /// Swap size in MB (disables suspend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_size_mb: Option<i64>,
    /// Command `console` runs in a throw-away machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_command: Option<String>,
    /// Dedicated host group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    /// Path to (or inline JSON of) a base machine config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_config: Option<String>,
    /// Which container of a multi-container config is the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// `[build]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// `[deploy]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    /// `[env]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `[processes]`: group name → command.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, String>,
    /// `[http_service]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_service: Option<HttpService>,
    /// `[[services]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// `[checks.<name>]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, TopLevelCheck>,
    /// `[[files]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    /// `[[mounts]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// `[[vm]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vm: Vec<Compute>,
    /// `[[restart]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<Restart>,
    /// `[[statics]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statics: Vec<Static>,
    /// `[[metrics]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    /// `[[machine_checks]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machine_checks: Vec<MachineCheck>,
    /// `[experimental]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental: Option<Experimental>,
}

/// `[build]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Build {
    /// CNB builder image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// Build arguments.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// Buildpacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buildpacks: Vec<String>,
    /// Deploy this image; no build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Legacy builtin builder settings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Legacy builtin builder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// Dockerfile path or URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// `.dockerignore` path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignorefile: Option<String>,
    /// Multistage build target (`build_target` is accepted and renamed).
    #[serde(rename = "build-target", skip_serializing_if = "Option::is_none")]
    pub build_target: Option<String>,
    /// `[build.compose]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose: Option<Compose>,
    /// `gzip` (default) or `zstd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Compression level (default 7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i64>,
}

/// `[build.compose]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Compose {
    /// Compose file path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `[deploy]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Deploy {
    /// Command run once per deploy in a temporary machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_command: Option<String>,
    /// Release command timeout (default 5 m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_command_timeout: Option<Duration>,
    /// Size of the release command machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_command_vm: Option<Compute>,
    /// `rolling` (default), `immediate`, `canary`, `bluegreen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// ≥ 1: machines at a time; (0,1): fraction (default 0.33).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<f64>,
    /// Per-machine wait during deploy (default 5 m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<Duration>,
    /// Used by launch flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_command: Option<String>,
}

/// `auto_stop_machines`: written as `"off"`, `"stop"` or `"suspend"`; read also from booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoStop {
    /// Never stop idle machines.
    Off,
    /// Stop idle machines.
    Stop,
    /// Suspend idle machines.
    Suspend,
}

impl AutoStop {
    /// The TOML spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            AutoStop::Off => "off",
            AutoStop::Stop => "stop",
            AutoStop::Suspend => "suspend",
        }
    }

    /// The Machines API value.
    pub fn to_api(self) -> hangar_api_types::Autostop {
        match self {
            AutoStop::Off => hangar_api_types::Autostop::Off,
            AutoStop::Stop => hangar_api_types::Autostop::Stop,
            AutoStop::Suspend => hangar_api_types::Autostop::Suspend,
        }
    }
}

impl Serialize for AutoStop {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AutoStop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AutoStop;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"one of "off", "stop", "suspend", true or false"#)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<AutoStop, E> {
                Ok(if v { AutoStop::Stop } else { AutoStop::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AutoStop, E> {
                match v {
                    "off" | "false" => Ok(AutoStop::Off),
                    "stop" | "true" => Ok(AutoStop::Stop),
                    "suspend" => Ok(AutoStop::Suspend),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `[http_service]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpService {
    /// Port the app listens on inside the machine (default 8080).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_port: Option<i64>,
    /// Redirect port 80 to https.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_https: Option<bool>,
    /// Stop or suspend idle machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_machines: Option<AutoStop>,
    /// Start machines on demand (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_start_machines: Option<bool>,
    /// Machines kept running in the primary region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<i64>,
    /// Process groups served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
    /// Load limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<MachineServiceConcurrency>,
    /// TLS options of port 443.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_options: Option<TlsOptions>,
    /// HTTP options of both ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_options: Option<HttpOptions>,
    /// HTTP health checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<HttpCheck>,
    /// Deploy-time test machines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machine_checks: Vec<MachineCheck>,
}

/// `[[services]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    /// `tcp` or `udp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port inside the machine (default 8080).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_port: Option<i64>,
    /// Stop or suspend idle machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_machines: Option<AutoStop>,
    /// Start machines on demand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_start_machines: Option<bool>,
    /// Machines kept running in the primary region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<i64>,
    /// Public ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<MachinePort>,
    /// Load limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<MachineServiceConcurrency>,
    /// TCP health checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_checks: Vec<TcpCheck>,
    /// HTTP health checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_checks: Vec<HttpCheck>,
    /// Deploy-time test machines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machine_checks: Vec<MachineCheck>,
    /// Process groups served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[[services.tcp_checks]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TcpCheck {
    /// Time between checks (integer = ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time a check may take (integer = ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time after start before failures count (integer = ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
}

/// `[[services.http_checks]]` and `[[http_service.checks]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpCheck {
    /// Time between checks (integer = ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time a check may take (integer = ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time after start before failures count (integer = ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
    /// HTTP method (default GET).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path to request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http` (default) or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Skip TLS verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    /// SNI name for https checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Request headers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// `[checks.<name>]`: machine-level checks (they do not gate routing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopLevelCheck {
    /// Port to check (default: `http_service.internal_port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// `http` or `tcp` (required).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub check_type: Option<String>,
    /// Time between checks (≥ 2 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time a check may take (≤ 60 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time after start before failures count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http` or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Skip TLS verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    /// SNI name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Request headers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `informational` or `readiness`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Process groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[[machine_checks]]`: a test machine run against each updated machine during deploys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MachineCheck {
    /// Command to run (required).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Image (default: the tested machine's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Entrypoint (default: the tested machine's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Stop signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_signal: Option<String>,
    /// Stop timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<Duration>,
}

/// `[[files]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct File {
    /// Path inside the machine (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_path: Option<String>,
    /// Local file read at deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    /// Secret holding base64 content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Base64 content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<String>,
    /// Process groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[[mounts]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    /// Volume name (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Mount path (required, not `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Size of volumes created by deploy (integer = GB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_size: Option<String>,
    /// Snapshot retention in days (1–60, default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<i64>,
    /// Take daily snapshots (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_snapshots: Option<bool>,
    /// Extend when usage passes this percent (50–99).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_extend_size_threshold: Option<i64>,
    /// Extend by this much (1–100 GB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_extend_size_increment: Option<String>,
    /// Never extend past this (1–500 GB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_extend_size_limit: Option<String>,
    /// Process groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[[vm]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Compute {
    /// Preset name (explicit keys win over it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Memory with a unit (`"1gb"`) or MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// `shared` or `performance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<String>,
    /// CPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<i64>,
    /// Memory in MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// GPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i64>,
    /// GPU model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_kind: Option<String>,
    /// Extra kernel arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
    /// Dedicated host group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    /// `never` (default), `restart`, `always`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist_rootfs: Option<String>,
    /// Process groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[[restart]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Restart {
    /// `always`, `never` or `on-failure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Max restarts (→ `max_retries`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Process groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[[statics]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Static {
    /// Directory inside the machine (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_path: Option<String>,
    /// URL prefix served from it (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
    /// Tigris bucket instead of a directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tigris_bucket: Option<String>,
    /// Index document (Tigris only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_document: Option<String>,
}

/// `[[metrics]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    /// Port to scrape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Path to scrape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Scrape over https.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https: Option<bool>,
    /// Process groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[experimental]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Experimental {
    /// Overrides the image CMD.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// Overrides the image ENTRYPOINT.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Overrides both.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    /// Roll back failed deploys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    /// Legacy Consul cluster access.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_consul: Option<bool>,
    /// Legacy etcd cluster access.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_etcd: Option<bool>,
    /// Lazy image loading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy_load_images: Option<bool>,
    /// Secrets of attached apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<serde_json::Value>,
    /// Base machine config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_config: Option<String>,
    /// Image compression (`gzip`/`zstd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Compression level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i64>,
}

impl Config {
    /// The `[processes]` names, sorted; `["app"]` when there are none.
    pub fn process_names(&self) -> Vec<String> {
        if self.processes.is_empty() {
            vec![DEFAULT_GROUP.to_string()]
        } else {
            self.processes.keys().cloned().collect()
        }
    }

    /// The default group: `app` if present, else the first name alphabetically.
    pub fn default_group(&self) -> String {
        match self.processes.keys().next() {
            Some(first) if !self.processes.contains_key(DEFAULT_GROUP) => first.clone(),
            _ => DEFAULT_GROUP.to_string(),
        }
    }

    /// The deploy strategy, defaulting to `rolling`.
    pub fn strategy(&self) -> &str {
        self.deploy
            .as_ref()
            .and_then(|d| d.strategy.as_deref())
            .unwrap_or("rolling")
    }
}

/// Group name used when there is no `[processes]` section.
pub const DEFAULT_GROUP: &str = "app";
