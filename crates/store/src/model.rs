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

/// A private network (PLATFORM.md §4.4): an org's `default` one (id = the org's numeric id) or
/// a custom one named at app creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    /// Owning org.
    pub org_slug: String,
    /// Name, unique in the org.
    pub name: String,
    /// The 32-bit network id of 6PN addresses; never reused.
    pub id: u32,
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
    /// `app`, `machine`, `org`, `lease`, `certificate`, `volume`, `network`.
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

/// A certificate with its private key sealed ([`crate::Sealer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The private key (PEM), sealed with the context [`CertificateRecord::key_context`].
    pub key_sealed: Vec<u8>,
    /// End of the leaf's validity (ms epoch).
    pub not_after: i64,
    /// Who issued the leaf (its issuer's common name).
    pub issuer: String,
    /// When it was stored (ms epoch).
    pub created_at: i64,
}

/// A custom hostname of an app and its certificates (§2.10): an imported (custom) one and one
/// issued over ACME, plus the state of ACME issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Normalised host name (lowercase; `*.` for a wildcard); globally unique.
    pub hostname: String,
    /// The app it routes to.
    pub app: String,
    /// Whether a certificate should be issued (and renewed) over ACME.
    pub acme_requested: bool,
    /// Imported certificate (served first while valid).
    pub custom: Option<StoredCert>,
    /// ACME-issued certificate.
    pub acme: Option<StoredCert>,
    /// ACME issuance: `""` (not requested), `pending`, `issuing`, `ready` or `failed`.
    pub acme_status: String,
    /// The challenge type that last validated the name (`http-01`, `tls-alpn-01`).
    pub acme_challenge: Option<String>,
    /// Consecutive failed ACME attempts.
    pub acme_attempts: u32,
    /// Earliest time of the next ACME attempt (ms epoch; 0 = now).
    pub acme_next_attempt_at: i64,
    /// The last ACME error.
    pub acme_error: Option<String>,
    /// When it happened (ms epoch).
    pub acme_error_at: Option<i64>,
    /// Creation time (ms epoch).
    pub created_at: i64,
    /// Last change (ms epoch).
    pub updated_at: i64,
    /// Store revision of the last write (set by the store).
    pub revision: u64,
}

impl CertificateRecord {
    /// A hostname of `app` with no certificate yet.
    pub fn new(hostname: &str, app: &str, now_ms: i64) -> Self {
        Self {
            hostname: hostname.to_string(),
            app: app.to_string(),
            acme_requested: false,
            custom: None,
            acme: None,
            acme_status: String::new(),
            acme_challenge: None,
            acme_attempts: 0,
            acme_next_attempt_at: 0,
            acme_error: None,
            acme_error_at: None,
            created_at: now_ms,
            updated_at: now_ms,
            revision: 0,
        }
    }

    /// The sealing context of this hostname's `source` (`custom` or `acme`) private key.
    pub fn key_context(hostname: &str, source: &str) -> Vec<u8> {
        format!("hangar-certificate-key:{source}:{hostname}").into_bytes()
    }
}

/// An ACME account of this platform at one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAccountRecord {
    /// The directory URL.
    pub directory: String,
    /// The account's PKCS#8 key, sealed with the context [`AcmeAccountRecord::key_context`].
    pub key_sealed: Vec<u8>,
    /// The account URL (`kid`).
    pub url: String,
    /// Creation time (ms epoch).
    pub created_at: i64,
}

impl AcmeAccountRecord {
    /// The sealing context of the account key at `directory`.
    pub fn key_context(directory: &str) -> Vec<u8> {
        format!("hangar-acme-account:{directory}").into_bytes()
    }
}

/// A volume: a disk on one host, mounted into at most one machine (§2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    /// `vol_` + 16 base-32 characters.
    pub id: String,
    /// App it belongs to.
    pub app: String,
    /// Name (not unique; `[[mounts]] source` picks volumes by it).
    pub name: String,
    /// Region.
    pub region: String,
    /// Hardware zone (the host's).
    pub zone: String,
    /// Host that keeps the data (machines using it run there).
    pub host: String,
    /// Size in GB.
    pub size_gb: i64,
    /// `creating`, `created`, `extending`, `pending_destroy` (written by the API and the host).
    pub state: String,
    /// Encryption at rest as requested.
    pub encrypted: bool,
    /// Filesystem (`ext4`).
    pub fstype: String,
    /// The machine that mounts it.
    pub attached_machine_id: Option<String>,
    /// Days snapshots are kept (also: at most this many are kept).
    pub snapshot_retention: i64,
    /// Daily automatic snapshots.
    pub auto_backup_enabled: bool,
    /// Made as a copy of this volume (fork).
    pub source_volume_id: Option<String>,
    /// Made from this snapshot (restore).
    pub source_snapshot_id: Option<String>,
    /// Creation time (ms epoch).
    pub created_at: i64,
    /// Last change (ms epoch).
    pub updated_at: i64,
    /// Store revision of the last write (set by the store).
    pub revision: u64,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// `vs_` + 16 base-32 characters.
    pub id: String,
    /// The volume it copies.
    pub volume_id: String,
    /// `running` (asked for, being taken), `created` or `failed`.
    pub status: String,
    /// Stored bytes.
    pub size: i64,
    /// Size of the volume when taken, in bytes.
    pub volume_size: i64,
    /// `sha256:<hex>` of the stored archive.
    pub digest: String,
    /// Days it is kept.
    pub retention_days: i64,
    /// Creation time (ms epoch).
    pub created_at: i64,
}

/// One app secret; the value is sealed by whoever writes it (the store never sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Env var name.
    pub name: String,
    /// The sealed value.
    pub sealed: Vec<u8>,
    /// sha256 of the value, hex (shown instead of the value).
    pub digest: String,
    /// ms epoch.
    pub created_at: i64,
    /// ms epoch.
    pub updated_at: i64,
}
