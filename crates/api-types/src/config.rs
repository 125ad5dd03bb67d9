//! `MachineConfig` and its parts (§2.5), except services and checks (see [`crate::service`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::enums::{DependencyCondition, RestartPolicy};
use crate::serde_util::null_default;
use crate::service::{MachineCheck, MachineHttpHeader, MachineService};

/// A Machine's full configuration. Updates replace it whole.
///
/// `image` is always written; every other empty field is omitted. Unknown fields in
/// received JSON are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Image reference to run (required on create).
    #[serde(default)]
    pub image: String,
    /// Environment variables.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Overrides for the image's entrypoint/cmd and init settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<MachineInit>,
    /// CPU/memory/GPU sizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<MachineGuest>,
    /// Preset size name (deprecated; exclusive with `guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Free-form labels; some `fly_*` keys are reserved.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    /// Services exposed through the proxy.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<MachineService>,
    /// Named top-level checks.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub checks: BTreeMap<String, MachineCheck>,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<MachineRestart>,
    /// Destroy the Machine when its main process exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_destroy: Option<bool>,
    /// Volume mounts (at most one).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<MachineMount>,
    /// Process overrides.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub processes: Vec<MachineProcess>,
    /// Files written into the Machine before boot.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub files: Vec<File>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// How the Machine is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    /// `hourly`, `daily`, `weekly` or `monthly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Machine IDs this Machine stands by for.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub standbys: Vec<String>,
    /// Static file mappings served by the proxy.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub statics: Vec<Static>,
    /// Prometheus scrape target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MachineMetrics>,
    /// Containers of a multi-container Machine.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub containers: Vec<ContainerConfig>,
    /// Volumes shared between containers.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<VolumeConfig>,
    /// Root filesystem persistence and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<MachineRootfs>,
    /// Local cache drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_drive: Option<CacheDrive>,
    /// Legacy; use `services[].autostart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_machine_autostart: Option<bool>,
}

/// Init overrides: `exec` replaces both ENTRYPOINT and CMD.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineInit {
    /// Full command line, replacing entrypoint and cmd.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exec: Vec<String>,
    /// ENTRYPOINT override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    /// CMD override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    /// Allocate a TTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Swap size in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_size_mb: Option<i64>,
    /// Extra kernel arguments.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kernel_args: Vec<String>,
}

impl MachineConfig {
    /// Memory (MB) above which the reference does not suspend a machine.
    pub const SUSPEND_MAX_MEMORY_MB: i64 = 2048;

    /// Whether `auto_stop_machines = "suspend"` suspends this machine (PLATFORM.md §3.7): at
    /// most 2 GB of memory (256 MB when unset), no swap, no schedule, no GPU. Otherwise the
    /// reference stops it, and so does Hangar (a frozen machine keeps all its memory).
    pub fn suspendable(&self) -> bool {
        let guest = self.guest.as_ref();
        let memory = guest.and_then(|g| g.memory_mb).unwrap_or(256);
        let gpu = guest.is_some_and(|g| {
            g.gpus.is_some_and(|n| n > 0) || g.gpu_kind.as_deref().is_some_and(|k| !k.is_empty())
        });
        let swap = self
            .init
            .as_ref()
            .and_then(|i| i.swap_size_mb)
            .is_some_and(|mb| mb > 0);
        let scheduled = self.schedule.as_deref().is_some_and(|s| !s.is_empty());
        memory <= Self::SUSPEND_MAX_MEMORY_MB && !gpu && !swap && !scheduled
    }
}

/// Guest sizing. Defaults on the platform: 1 shared CPU, 256 MB.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineGuest {
    /// `shared` or `performance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<String>,
    /// Number of vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<i64>,
    /// Memory in MB (multiple of 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// Memory ceiling in MB for memory ballooning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<i64>,
    /// Number of GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i64>,
    /// GPU model (`a100-pcie-40gb`, `l40s`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_kind: Option<String>,
    /// Dedicated host group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    /// `never`, `restart` or `always` (see [`crate::PersistRootfs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_rootfs: Option<String>,
    /// Extra kernel arguments.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kernel_args: Vec<String>,
}

/// Restart policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineRestart {
    /// `no`, `always` or `on-failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RestartPolicy>,
    /// Retries for `on-failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
}

/// A volume mount.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineMount {
    /// Volume ID (`vol_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Mount point inside the Machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Volume name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the volume is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Size in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<i64>,
    /// Auto-extend when usage passes this percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_threshold_percent: Option<i64>,
    /// GB added per auto-extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_size_gb: Option<i64>,
    /// Auto-extension ceiling in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb_limit: Option<i64>,
}

/// A process override.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineProcess {
    /// Full command line override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exec: Vec<String>,
    /// ENTRYPOINT override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    /// CMD override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    /// User override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra environment variables.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Environment variables filled from Machine fields.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env_from: Vec<EnvFrom>,
    /// Secrets exposed to this process (overrides the Machine-level set).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub secrets: Vec<MachineSecret>,
    /// Ignore app-level secrets; use only `secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_app_secrets: Option<bool>,
}

/// An environment variable filled from a Machine field. Both fields are always written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EnvFrom {
    /// Variable name.
    #[serde(default)]
    pub env_var: String,
    /// `id`, `version`, `app_name`, `private_ip`, `region` or `image`.
    #[serde(default)]
    pub field_ref: String,
}

/// A secret exposed as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineSecret {
    /// Variable name (always written).
    #[serde(default)]
    pub env_var: String,
    /// Secret name when it differs from `env_var`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A file written into the Machine; exactly one source field is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct File {
    /// Absolute path inside the Machine.
    #[serde(default)]
    pub guest_path: String,
    /// Base64 contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<String>,
    /// Secret holding base64 contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Image whose OCI config becomes the contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<String>,
    /// chmod(2) mode bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Do not register the Machine in `.internal` DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_registration: Option<bool>,
    /// resolv.conf nameservers.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<String>,
    /// resolv.conf search domains.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub searches: Vec<String>,
    /// resolv.conf options.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<DnsOption>,
    /// Forwarding rules for name suffixes.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_forward_rules: Vec<DnsForwardRule>,
    /// Guest hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Guest fully qualified hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_fqdn: Option<String>,
}

/// A resolv.conf option.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsOption {
    /// Option name.
    #[serde(default)]
    pub name: String,
    /// Option value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Forward queries under `basename` to `addr`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsForwardRule {
    /// Name suffix.
    #[serde(default)]
    pub basename: String,
    /// Resolver address.
    #[serde(default)]
    pub addr: String,
}

/// How the Machine is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StopConfig {
    /// Signal sent first (default SIGINT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Wait before SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A static-files mapping served by the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Static {
    /// Directory inside the Machine (required).
    #[serde(default)]
    pub guest_path: String,
    /// URL prefix (required).
    #[serde(default)]
    pub url_prefix: String,
    /// Serve from this Tigris bucket instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tigris_bucket: Option<String>,
    /// Index file for directory URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_document: Option<String>,
}

/// Prometheus scrape target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineMetrics {
    /// Port to scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Path to scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Scrape over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<bool>,
}

/// Root filesystem settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineRootfs {
    /// `never`, `restart` or `always` (see [`crate::PersistRootfs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<String>,
    /// Size in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<i64>,
}

/// Local cache drive.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheDrive {
    /// Size in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<i64>,
}

/// One container of a multi-container Machine. `name` and `image` are always written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Container name, unique within the Machine.
    #[serde(default)]
    pub name: String,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// Full command line override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exec: Vec<String>,
    /// ENTRYPOINT override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    /// CMD override.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    /// User override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra environment variables.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Secrets exposed to the container.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub secrets: Vec<MachineSecret>,
    /// Environment variables filled from Machine fields.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env_from: Vec<EnvFrom>,
    /// Files written into the container.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub files: Vec<File>,
    /// Container restart policy (no `spot-price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<MachineRestart>,
    /// Stop signal and timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopConfig>,
    /// Start ordering.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub depends_on: Vec<ContainerDependency>,
    /// Container health checks.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub healthchecks: Vec<ContainerHealthcheck>,
    /// Mounts of Machine-level `volumes`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<ContainerMount>,
}

/// A start-order dependency on another container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerDependency {
    /// The other container.
    #[serde(default)]
    pub name: String,
    /// What to wait for.
    #[serde(default)]
    pub condition: DependencyCondition,
}

/// A container health check: exactly one of `http`, `tcp`, `exec`. Times are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerHealthcheck {
    /// Check name, unique within the container.
    #[serde(default)]
    pub name: String,
    /// Seconds between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Seconds after start before checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<i64>,
    /// Successes needed to become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    /// Failures needed to become unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    /// Seconds before a check times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// `readiness` or `liveness`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Action when unhealthy (`stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    /// HTTP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthcheck>,
    /// TCP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthcheck>,
    /// Command probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthcheck>,
}

/// HTTP container probe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpHealthcheck {
    /// Port.
    #[serde(default)]
    pub port: i64,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Extra headers.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub headers: Vec<MachineHttpHeader>,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Skip TLS verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    /// TLS server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

/// TCP container probe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TcpHealthcheck {
    /// Port.
    #[serde(default)]
    pub port: i64,
}

/// Command container probe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecHealthcheck {
    /// Command and arguments.
    #[serde(default, deserialize_with = "null_default")]
    pub command: Vec<String>,
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerMount {
    /// Name of a Machine-level `volumes[]` entry.
    #[serde(default)]
    pub name: String,
    /// Mount point inside the container.
    #[serde(default)]
    pub path: String,
}

/// A Machine-level volume for containers: a temp dir or an image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeConfig {
    /// Volume name, referenced by container mounts.
    #[serde(default)]
    pub name: String,
    /// Ephemeral directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<TempDirVolume>,
    /// Image whose filesystem backs the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// An ephemeral directory tied to the Machine's lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TempDirVolume {
    /// `disk` or `memory`.
    #[serde(default)]
    pub storage_type: String,
    /// Size limit in MB (disk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<u64>,
}
