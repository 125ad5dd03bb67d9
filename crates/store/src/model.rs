//! Records as stored.

use hangar_api_types::{ImageRef, MachineConfig, StopConfig};
use hangar_domain::State;
use serde::{Deserialize, Serialize};

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    /// Slug, e.g. `personal`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Numeric id; also the org's default network id (6PN layout).
    pub numeric_id: i64,
    /// Creation time (ms epoch).
    pub created_at: i64,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything, every org.
    Admin,
    /// One org's apps and machines.
    Org(String),
}

/// An app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    /// Opaque id.
    pub id: String,
    /// Globally unique name.
    pub name: String,
    /// Owning org.
    pub org_slug: String,
    /// Private network name (`default` unless set at creation).
    pub network: String,
    /// Creation time (ms epoch).
    pub created_at: i64,
}

/// An operation requested of the agent and not yet finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PendingOp {
    /// Start (or resume) the machine.
    Start,
    /// Stop with this signal and timeout.
    Stop {
        /// Signal and timeout.
        stop: StopConfig,
    },
    /// Freeze it.
    Suspend,
    /// Stop then start.
    Restart {
        /// Signal and timeout for the stop.
        stop: StopConfig,
    },
    /// Replace the running config with the current one, then start it or leave it stopped.
    Update {
        /// Start after the update.
        launch: bool,
    },
    /// Destroy, killing if needed.
    Destroy {
        /// Kill a running machine.
        force: bool,
    },
    /// Send a signal.
    Signal {
        /// Signal name.
        signal: String,
    },
}

/// A machine.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRecord {
    /// 14-hex id.
    pub id: String,
    /// App name.
    pub app: String,
    /// Unique within the app.
    pub name: String,
    /// Region.
    pub region: String,
    /// Observed/lifecycle state.
    pub state: State,
    /// Current version (ULID).
    pub instance_id: String,
    /// The config of the current version.
    pub config: MachineConfig,
    /// Resolved image.
    pub image_ref: Option<ImageRef>,
    /// 6PN address.
    pub private_ip: String,
    /// Host that runs it.
    pub host: String,
    /// Out of proxy routing.
    pub cordoned: bool,
    /// Work for the agent.
    pub pending: Option<PendingOp>,
    /// Consecutive automatic restarts (restart policy).
    pub restart_count: i64,
    /// Creation time (ms epoch).
    pub created_at: i64,
    /// Last change (ms epoch).
    pub updated_at: i64,
    /// Store revision of the last write (set by the store).
    pub revision: u64,
}

/// A version of a machine's config.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    /// Machine id.
    pub machine_id: String,
    /// Version ULID.
    pub instance_id: String,
    /// The config of that version.
    pub config: MachineConfig,
    /// When it was made (ms epoch).
    pub created_at: i64,
}

/// A machine event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Event id (ULID).
    pub id: String,
    /// Machine id.
    pub machine_id: String,
    /// `launch`, `start`, `stop`, `exit`, `update`, `restart`, `destroy`, …
    pub kind: String,
    /// The state reached or the step status.
    pub status: String,
    /// `user` or `flyd`.
    pub source: String,
    /// ms epoch.
    pub timestamp: i64,
    /// `request` object as JSON (exit details etc.).
    pub request: Option<serde_json::Value>,
}

/// A lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Machine id.
    pub machine_id: String,
    /// Secret nonce.
    pub nonce: String,
    /// Holder.
    pub owner: String,
    /// Free text.
    pub description: String,
    /// Unix ms.
    pub expires_at_ms: i64,
    /// Machine version when acquired.
    pub version: String,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its revision.
    pub revision: u64,
    /// `app`, `machine`, `org`, `lease`.
    pub kind: String,
    /// Row key (app name, machine id …).
    pub key: String,
}

/// The latest result of one health check of a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    /// Check name (`servicecheck-00-http-8080` for service checks, the map key otherwise).
    pub name: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// What the check saw (bounded by the writer).
    pub output: String,
    /// ms epoch.
    pub updated_at: i64,
}
