//! Request and small response bodies of the Machine endpoints (§2.3, §2.7).

use serde::{Deserialize, Serialize};

use crate::config::MachineConfig;
use crate::duration::Duration;
use crate::enums::MachineState;
use crate::serde_util::null_default;

/// Body of `POST /apps/{app}/machines` (create) and, with `current_version`,
/// `POST /apps/{app}/machines/{id}` (update).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateMachineRequest {
    /// Machine name; generated when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Target region; nearest to the caller when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Configuration (required; `config.image` required). Always written.
    #[serde(default)]
    pub config: MachineConfig,
    /// Create without booting (state `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    /// Create cordoned (not in proxy routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_service_registration: Option<bool>,
    /// Acquire a lease for this many seconds; nonce returned in `Machine.nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<i64>,
    /// Use log-structured virtual disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsvd: Option<bool>,
    /// Do not inject app secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_secrets: Option<bool>,
    /// Fail unless app secrets are at least this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
    /// Update only: expected current version (optimistic concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
}

/// Body of an update; same shape as create plus `current_version`.
pub type UpdateMachineRequest = CreateMachineRequest;

/// Body of `POST …/{id}/stop`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StopRequest {
    /// Signal to send first (default SIGINT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Wait before SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Body of `POST …/{id}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SignalRequest {
    /// Signal name, e.g. `SIGHUP`.
    #[serde(default)]
    pub signal: String,
}

/// Body of `POST …/{id}/exec`: `command` (argv) or legacy `cmd` (one string).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Deprecated single-string command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Command and arguments.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command: Vec<String>,
    /// Target container of a multi-container Machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Data written to the command's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// Response of `POST …/{id}/exec`. All fields are always written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecResponse {
    /// Exit status.
    #[serde(default)]
    pub exit_code: i64,
    /// Captured stdout.
    #[serde(default)]
    pub stdout: String,
    /// Captured stderr.
    #[serde(default)]
    pub stderr: String,
}

/// Response of `POST …/{id}/start`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StartResponse {
    /// State before the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<MachineState>,
    /// Whether the Machine moved to another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated: Option<bool>,
    /// The new host, when migrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_host: Option<String>,
}

/// Response of `GET …/{id}/wait` (200). `state` is a Hangar addition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WaitResponse {
    /// Always `true` on 200.
    #[serde(default)]
    pub ok: bool,
    /// The state reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MachineState>,
}

/// Body of `POST …/{id}/metadata/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetadataValue {
    /// New value.
    #[serde(default)]
    pub value: String,
}

/// `{"ok": true}` (cordon, uncordon, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OkResponse {
    /// Success flag.
    #[serde(default)]
    pub ok: bool,
}

impl OkResponse {
    /// `{"ok": true}`.
    pub const OK: OkResponse = OkResponse { ok: true };
}

/// One item of `GET …/{id}/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineVersion {
    /// Version ID.
    #[serde(default)]
    pub version: String,
    /// Config of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_config: Option<MachineConfig>,
}

/// One process of `GET …/{id}/ps`. All fields are always written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcessStat {
    /// Process ID.
    #[serde(default)]
    pub pid: i64,
    /// System CPU time.
    #[serde(default)]
    pub stime: u64,
    /// Run time.
    #[serde(default)]
    pub rtime: u64,
    /// Command line.
    #[serde(default)]
    pub command: String,
    /// Working directory.
    #[serde(default)]
    pub directory: String,
    /// CPU usage.
    #[serde(default)]
    pub cpu: u64,
    /// Resident set size, bytes.
    #[serde(default)]
    pub rss: u64,
    /// Listening sockets.
    #[serde(default, deserialize_with = "null_default")]
    pub listen_sockets: Vec<ListenSocket>,
}

/// A listening socket of a process.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListenSocket {
    /// `tcp` or `udp`.
    #[serde(default)]
    pub proto: String,
    /// `address:port`.
    #[serde(default)]
    pub address: String,
}
