//! Volumes and snapshots (§2.9).

use serde::{Deserialize, Serialize};

use crate::config::MachineGuest;
use crate::enums::HostStatus;

/// A volume. Core fields are always written; the rest when set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Volume {
    /// `vol_...` ID.
    #[serde(default)]
    pub id: String,
    /// Name (not unique).
    #[serde(default)]
    pub name: String,
    /// `created`, `scheduling_destroy`, ...
    #[serde(default)]
    pub state: String,
    /// Size in GB.
    #[serde(default)]
    pub size_gb: i64,
    /// Region code.
    #[serde(default)]
    pub region: String,
    /// Hardware zone.
    #[serde(default)]
    pub zone: String,
    /// Whether encrypted at rest.
    #[serde(default)]
    pub encrypted: bool,
    /// Filesystem type (`ext4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Attached Machine, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_machine_id: Option<String>,
    /// Attached allocation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_alloc_id: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: String,
    /// Dedicated host group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    /// Days snapshots are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<i64>,
    /// Daily automatic snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
    /// Host reachability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_status: Option<HostStatus>,
    /// Filesystem block size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<i64>,
    /// Total blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<i64>,
    /// Blocks available to unprivileged users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_avail: Option<i64>,
    /// Free blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_free: Option<i64>,
}

/// Body of `POST /apps/{app}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateVolumeRequest {
    /// Volume name.
    #[serde(default)]
    pub name: String,
    /// Region code.
    #[serde(default)]
    pub region: String,
    /// Size in GB (CLI default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<i64>,
    /// Encrypt at rest (CLI default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Place on a zone with no other volume of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_unique_zone: Option<bool>,
    /// Apply zone uniqueness across the whole app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_zone_app_wide: Option<bool>,
    /// Days snapshots are kept (CLI default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<i64>,
    /// Daily automatic snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
    /// Filesystem type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Restore from this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Fork this volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_id: Option<String>,
    /// Guest the volume will serve (placement hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<MachineGuest>,
    /// Image the volume will serve (placement hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_image: Option<String>,
    /// Legacy flag from the 2024 API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines_only: Option<bool>,
}

/// Body of `PUT /apps/{app}/volumes/{vol}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateVolumeRequest {
    /// Days snapshots are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<i64>,
    /// Daily automatic snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
}

/// Body of `PUT …/{vol}/extend`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtendVolumeRequest {
    /// New size in GB.
    #[serde(default)]
    pub size_gb: i64,
}

/// Response of `PUT …/{vol}/extend`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtendVolumeResponse {
    /// The volume after extension.
    #[serde(default)]
    pub volume: Volume,
    /// The attached Machine must restart to see the new size.
    #[serde(default)]
    pub needs_restart: bool,
}

/// A volume snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    /// Snapshot ID.
    #[serde(default)]
    pub id: String,
    /// Stored size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Size of the source volume in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<i64>,
    /// Content digest.
    #[serde(default)]
    pub digest: String,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: String,
    /// `created`, `running`, ...
    #[serde(default)]
    pub status: String,
    /// Days the snapshot is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<i64>,
}
