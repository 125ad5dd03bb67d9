//! The Machine object (§2.4): events, check statuses and image reference.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::MachineConfig;
use crate::enums::{CheckStatus, HostStatus, MachineState};
use crate::serde_util::null_default;

/// A Machine as returned by the API.
///
/// Identity fields (`id`, `name`, `state`, `region`, `instance_id`, `private_ip`,
/// `created_at`, `updated_at`) are always written; the rest only when set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Machine {
    /// 14-hex-character ID.
    #[serde(default)]
    pub id: String,
    /// Name, unique within the app.
    #[serde(default)]
    pub name: String,
    /// Lifecycle state.
    #[serde(default)]
    pub state: MachineState,
    /// Region code.
    #[serde(default)]
    pub region: String,
    /// Resolved image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ImageRef>,
    /// Current version ULID; changes on every update.
    #[serde(default)]
    pub instance_id: String,
    /// Version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// 6PN address.
    #[serde(default)]
    pub private_ip: String,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: String,
    /// RFC 3339 last update time.
    #[serde(default)]
    pub updated_at: String,
    /// Configuration (absent when the host is unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<MachineConfig>,
    /// Partial configuration rebuilt when `host_status` is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_config: Option<MachineConfig>,
    /// Events, newest first.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub events: Vec<MachineEvent>,
    /// Check results.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub checks: Vec<CheckStatusEntry>,
    /// Lease nonce, returned on create when `lease_ttl` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Host reachability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_status: Option<HostStatus>,
    /// Removed from proxy routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordoned: Option<bool>,
    /// Container states of a multi-container Machine.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub containers: Vec<ContainerStatus>,
}

impl Machine {
    /// `config`, or `incomplete_config` when the host could not supply it.
    pub fn effective_config(&self) -> Option<&MachineConfig> {
        self.config.as_ref().or(self.incomplete_config.as_ref())
    }

    /// Value of metadata key `fly_process_group` (falling back to legacy `process_group`).
    pub fn process_group(&self) -> Option<&str> {
        let meta = &self.effective_config()?.metadata;
        meta.get("fly_process_group")
            .filter(|g| !g.is_empty())
            .or_else(|| meta.get("process_group"))
            .map(String::as_str)
    }
}

/// The resolved image of a Machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageRef {
    /// Registry host.
    #[serde(default)]
    pub registry: String,
    /// Repository path.
    #[serde(default)]
    pub repository: String,
    /// Tag.
    #[serde(default)]
    pub tag: String,
    /// Content digest (`sha256:...`).
    #[serde(default)]
    pub digest: String,
    /// Image labels; `fly.version` is shown by the CLI.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

/// A Machine event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineEvent {
    /// Event ID (ULID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `launch`, `start`, `update`, `exit`, `stop`, `restart`, `destroy`, ...
    #[serde(default)]
    pub r#type: String,
    /// Resulting state, e.g. `started`.
    #[serde(default)]
    pub status: String,
    /// `user` or `flyd`.
    #[serde(default)]
    pub source: String,
    /// Unix time in milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    /// Event details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<MachineEventRequest>,
}

/// Details attached to an event. Fields we do not model are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineEventRequest {
    /// How the main process exited (`exit` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_event: Option<ExitEvent>,
    /// Monitor-side exit information (JSON key `MonitorEvent`).
    #[serde(
        rename = "MonitorEvent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub monitor_event: Option<MonitorEvent>,
    /// Restarts so far under the restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i64>,
    /// Any other keys, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Exit information inside `MonitorEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// The exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_event: Option<ExitEvent>,
}

/// How a Machine's main process exited.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExitEvent {
    /// Exit code seen by init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Exit code of the guest process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_exit_code: Option<i64>,
    /// Signal that ended the guest process (-1 for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_signal: Option<i64>,
    /// Killed by the OOM killer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// Exit was requested (stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_stop: Option<bool>,
    /// The restart policy will restart the Machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarting: Option<bool>,
    /// Signal that ended the process (-1 for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i64>,
    /// RFC 3339 exit time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<String>,
}

/// Latest result of one check (`Machine.checks[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckStatusEntry {
    /// Check name; service checks are `servicecheck-*`.
    #[serde(default)]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(default)]
    pub status: CheckStatus,
    /// Check output.
    #[serde(default)]
    pub output: String,
    /// RFC 3339 time of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// State of one container of a multi-container Machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container name.
    #[serde(default)]
    pub name: String,
    /// Container state.
    #[serde(default)]
    pub state: String,
}
