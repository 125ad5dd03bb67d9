//! `/v1/apps/{app}/volumes…` (PLATFORM.md §2.9): volumes and their snapshots, and the checks
//! a machine's `config.mounts` goes through ([`mount_target`], [`attach`]).
//!
//! Handlers record desired state only: a new volume is `creating` (the host agent makes its
//! disk, blank or from a snapshot or another volume, and marks it `created`), an extension
//! sets the new size (`extending` until the host grew it), a snapshot is `running` until the
//! host took it, and a deleted volume is `pending_destroy` until the host removed its disk.
//! A volume lives on one host; machines that mount it are placed there.

use axum::Json;
use axum::extract::{Path, State};
use hangar_api_types::{
    CreateVolumeRequest, ExtendVolumeRequest, ExtendVolumeResponse, HostStatus, MachineConfig,
    UpdateVolumeRequest, Volume, VolumeSnapshot,
};
use hangar_domain::VolumeId;
use hangar_store::{AppRecord, SnapshotRecord, StoreError, VolumeRecord};

use super::apps::visible_app;
use crate::auth::Caller;
use crate::json::Body;
use crate::util::{now_ms, random};
use crate::{ApiError, ApiState};

/// Volume states (the reference's names).
const CREATING: &str = "creating";
const CREATED: &str = "created";
const EXTENDING: &str = "extending";
const PENDING_DESTROY: &str = "pending_destroy";
const SNAPSHOT_RUNNING: &str = "running";
const SNAPSHOT_CREATED: &str = "created";
/// Bounds of the reference.
const MAX_SIZE_GB: i64 = 500;
const DEFAULT_RETENTION_DAYS: i64 = 5;
const MAX_RETENTION_DAYS: i64 = 60;
const MAX_NAME: usize = 30;
const GB: i64 = 1 << 30;

fn short(s: &str) -> String {
    s.chars()
        .take(64)
        .collect::<String>()
        .escape_default()
        .to_string()
}

/// The wire form of a volume.
pub(crate) fn view(v: &VolumeRecord) -> Volume {
    Volume {
        id: v.id.clone(),
        name: v.name.clone(),
        state: v.state.clone(),
        size_gb: v.size_gb,
        region: v.region.clone(),
        zone: v.zone.clone(),
        encrypted: v.encrypted,
        fstype: Some(v.fstype.clone()),
        attached_machine_id: v.attached_machine_id.clone(),
        attached_alloc_id: v.attached_machine_id.clone(),
        created_at: hangar_domain::time::rfc3339(v.created_at),
        host_dedication_id: None,
        snapshot_retention: Some(v.snapshot_retention),
        auto_backup_enabled: Some(v.auto_backup_enabled),
        host_status: Some(HostStatus::Ok),
        block_size: None,
        blocks: None,
        blocks_avail: None,
        blocks_free: None,
    }
}

fn snapshot_view(s: &SnapshotRecord) -> VolumeSnapshot {
    VolumeSnapshot {
        id: s.id.clone(),
        size: s.size,
        volume_size: Some(s.volume_size),
        digest: s.digest.clone(),
        created_at: hangar_domain::time::rfc3339(s.created_at),
        status: s.status.clone(),
        retention_days: Some(s.retention_days),
    }
}

/// A volume of an app the caller sees; 404 otherwise (other orgs' volumes do not exist).
fn load(
    s: &ApiState,
    c: &Caller,
    app: &str,
    id: &str,
) -> Result<(AppRecord, VolumeRecord), ApiError> {
    let a = visible_app(s, c, app)?;
    VolumeId::parse(id).map_err(|_| ApiError::not_found("volume"))?;
    match s.store.get_volume(id)? {
        Some(v) if v.app == a.name => Ok((a, v)),
        _ => Err(ApiError::not_found("volume")),
    }
}

fn valid_name(n: &str) -> bool {
    (1..=MAX_NAME).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_size(size: i64) -> Result<(), ApiError> {
    if (1..=MAX_SIZE_GB).contains(&size) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "size_gb must be between 1 and {MAX_SIZE_GB}, not {size}"
        )))
    }
}

fn check_retention(days: i64) -> Result<(), ApiError> {
    if (1..=MAX_RETENTION_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "snapshot_retention must be between 1 and {MAX_RETENTION_DAYS} days, not {days}"
        )))
    }
}

fn new_volume_id() -> String {
    VolumeId::from_bytes(random::<10>()).to_string()
}

fn new_snapshot_id() -> String {
    format!("vs_{}", &new_volume_id()[4..])
}

/// Writes `v` over `current`; someone else's write in between is a 409.
fn store_update(
    s: &ApiState,
    v: &VolumeRecord,
    current: &VolumeRecord,
) -> Result<VolumeRecord, ApiError> {
    s.store
        .update_volume(v, current.revision)
        .map_err(|e| match e {
            StoreError::Conflict { .. } => {
                ApiError::conflict(format!("volume {} changed concurrently; retry", v.id))
            }
            StoreError::NameTaken { name, .. } => {
                ApiError::conflict(format!("machine {name} already has a volume"))
            }
            e => e.into(),
        })
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
) -> Result<Json<Vec<Volume>>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    Ok(Json(
        s.store
            .list_volumes(Some(&a.name))?
            .iter()
            .map(view)
            .collect(),
    ))
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    Body(req): Body<CreateVolumeRequest>,
) -> Result<Json<Volume>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    if let Some(fs) = req.fstype.as_deref().filter(|f| !f.is_empty())
        && fs != "ext4"
    {
        return Err(ApiError::bad_request(format!(
            "fstype '{}' is not supported; volumes are ext4",
            short(fs)
        )));
    }
    let retention = req.snapshot_retention.unwrap_or(DEFAULT_RETENTION_DAYS);
    check_retention(retention)?;
    // Where the content comes from: a snapshot (restore), another volume (fork), or nothing.
    let (source_snapshot, source_volume) = match (
        req.snapshot_id.as_deref().filter(|x| !x.is_empty()),
        req.source_volume_id.as_deref().filter(|x| !x.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give snapshot_id (restore) or source_volume_id (fork), not both",
            ));
        }
        (Some(sid), None) => {
            let snap = s.store.get_snapshot(sid)?;
            let src = match &snap {
                Some(sn) => s.store.get_volume(&sn.volume_id)?,
                None => None,
            };
            match (snap, src) {
                (Some(sn), Some(src)) if same_org(&s, &a, &src.app)? => {
                    if sn.status != SNAPSHOT_CREATED {
                        return Err(ApiError::precondition(format!(
                            "snapshot {sid} is {}; only a created snapshot can be restored",
                            sn.status
                        )));
                    }
                    (Some((sn, src)), None)
                }
                _ => return Err(ApiError::not_found("snapshot")),
            }
        }
        (None, Some(vid)) => match s.store.get_volume(vid)? {
            Some(src) if same_org(&s, &a, &src.app)? => {
                if !matches!(src.state.as_str(), CREATED | EXTENDING) {
                    return Err(ApiError::precondition(format!(
                        "volume {vid} is {}; only a created volume can be forked",
                        src.state
                    )));
                }
                (None, Some(src))
            }
            _ => return Err(ApiError::not_found("source volume")),
        },
        (None, None) => (None, None),
    };
    let source_of = source_snapshot
        .as_ref()
        .map(|(_, v)| v)
        .or(source_volume.as_ref());
    let min_size = match (&source_snapshot, &source_volume) {
        (Some((sn, _)), _) => ((sn.volume_size + GB - 1) / GB).max(1),
        (None, Some(v)) => v.size_gb,
        (None, None) => 1,
    };
    let size = req.size_gb.unwrap_or(min_size);
    check_size(size)?;
    if size < min_size {
        return Err(ApiError::bad_request(format!(
            "size_gb {size} is smaller than the source ({min_size} GB)"
        )));
    }
    let name = match (req.name.as_str(), source_of) {
        ("", Some(src)) => src.name.clone(),
        (n, _) => n.to_string(),
    };
    if !valid_name(&name) {
        return Err(ApiError::bad_request(format!(
            "invalid volume name '{}': 1 to {MAX_NAME} lowercase letters, digits and underscores",
            short(&name)
        )));
    }
    let region = if req.region.is_empty() {
        source_of.map_or_else(|| s.config.region.clone(), |v| v.region.clone())
    } else {
        req.region.clone()
    };
    if !s.config.regions.contains(&region) {
        return Err(ApiError::bad_request(format!(
            "unknown region '{}'; this platform has: {}",
            short(&region),
            s.config.regions.join(", ")
        )));
    }
    // A copy is made on the host that has the source.
    let host = source_of.map_or_else(|| s.config.host_name.clone(), |v| v.host.clone());
    if let Some(src) = source_of
        && src.region != region
    {
        return Err(ApiError::unprocessable(format!(
            "the source volume {} is in region {}; a copy of it is made there",
            src.id, src.region
        )));
    }
    let now = now_ms();
    let rec = VolumeRecord {
        id: new_volume_id(),
        app: a.name.clone(),
        name,
        region,
        zone: host.clone(),
        host,
        size_gb: size,
        state: CREATING.into(),
        encrypted: req.encrypted.unwrap_or(true),
        fstype: "ext4".into(),
        attached_machine_id: None,
        snapshot_retention: retention,
        auto_backup_enabled: req.auto_backup_enabled.unwrap_or(true),
        source_volume_id: source_volume.map(|v| v.id),
        source_snapshot_id: source_snapshot.map(|(sn, _)| sn.id),
        created_at: now,
        updated_at: now,
        revision: 0,
    };
    let stored = s.store.create_volume(&rec)?;
    Ok(Json(view(&stored)))
}

fn same_org(s: &ApiState, a: &AppRecord, other_app: &str) -> Result<bool, ApiError> {
    Ok(s.store
        .get_app(other_app)?
        .is_some_and(|o| o.org_slug == a.org_slug))
}

pub(crate) async fn get(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Volume>, ApiError> {
    let (_, v) = load(&s, &c, &app, &id)?;
    Ok(Json(view(&v)))
}

pub(crate) async fn update(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
    Body(req): Body<UpdateVolumeRequest>,
) -> Result<Json<Volume>, ApiError> {
    let (_, v) = load(&s, &c, &app, &id)?;
    let mut rec = v.clone();
    if let Some(days) = req.snapshot_retention {
        check_retention(days)?;
        rec.snapshot_retention = days;
    }
    if let Some(on) = req.auto_backup_enabled {
        rec.auto_backup_enabled = on;
    }
    if rec == v {
        return Ok(Json(view(&v)));
    }
    rec.updated_at = now_ms();
    Ok(Json(view(&store_update(&s, &rec, &v)?)))
}

pub(crate) async fn delete(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Volume>, ApiError> {
    let (_, v) = load(&s, &c, &app, &id)?;
    if let Some(m) = &v.attached_machine_id {
        return Err(ApiError::precondition(format!(
            "volume {id} is attached to machine {m}; destroy the machine first"
        )));
    }
    if v.state == PENDING_DESTROY {
        return Ok(Json(view(&v)));
    }
    let mut rec = v.clone();
    rec.state = PENDING_DESTROY.into();
    rec.updated_at = now_ms();
    Ok(Json(view(&store_update(&s, &rec, &v)?)))
}

pub(crate) async fn extend(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
    Body(req): Body<ExtendVolumeRequest>,
) -> Result<Json<ExtendVolumeResponse>, ApiError> {
    let (a, v) = load(&s, &c, &app, &id)?;
    check_size(req.size_gb)?;
    if req.size_gb <= v.size_gb {
        return Err(ApiError::bad_request(format!(
            "size_gb must be larger than the volume's {} GB (volumes only grow)",
            v.size_gb
        )));
    }
    if v.state == PENDING_DESTROY {
        return Err(ApiError::precondition(format!(
            "volume {id} is being destroyed"
        )));
    }
    let mut rec = v.clone();
    rec.size_gb = req.size_gb;
    if rec.state == CREATED {
        rec.state = EXTENDING.into();
    }
    rec.updated_at = now_ms();
    let stored = store_update(&s, &rec, &v)?;
    // The filesystem grows online when the host allows it, else before the machine's next
    // boot: a machine that runs now is told to restart to be sure to see the new size.
    let needs_restart = match &stored.attached_machine_id {
        Some(m) => s.store.get_machine(&a.name, m)?.is_some_and(|m| {
            matches!(
                m.state,
                hangar_domain::State::Started
                    | hangar_domain::State::Starting
                    | hangar_domain::State::Restarting
                    | hangar_domain::State::Suspended
                    | hangar_domain::State::Suspending
            )
        }),
        None => false,
    };
    Ok(Json(ExtendVolumeResponse {
        volume: view(&stored),
        needs_restart,
    }))
}

pub(crate) async fn snapshots(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<VolumeSnapshot>>, ApiError> {
    let (_, v) = load(&s, &c, &app, &id)?;
    Ok(Json(
        s.store
            .list_snapshots(&v.id)?
            .iter()
            .map(snapshot_view)
            .collect(),
    ))
}

pub(crate) async fn create_snapshot(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<VolumeSnapshot>, ApiError> {
    let (_, v) = load(&s, &c, &app, &id)?;
    if !matches!(v.state.as_str(), CREATED | EXTENDING) {
        return Err(ApiError::precondition(format!(
            "volume {id} is {}; only a created volume can be snapshotted",
            v.state
        )));
    }
    if s.store
        .list_snapshots(&v.id)?
        .iter()
        .any(|x| x.status == SNAPSHOT_RUNNING)
    {
        return Err(ApiError::busy(format!(
            "a snapshot of volume {id} is being taken; retry when it is done"
        )));
    }
    let snap = SnapshotRecord {
        id: new_snapshot_id(),
        volume_id: v.id.clone(),
        status: SNAPSHOT_RUNNING.into(),
        size: 0,
        volume_size: v.size_gb * GB,
        digest: String::new(),
        retention_days: v.snapshot_retention,
        created_at: now_ms(),
    };
    s.store.create_snapshot(&snap)?;
    Ok(Json(snapshot_view(&snap)))
}

/// The volume a machine config mounts, checked: at most one mount, a volume id of the app
/// (another org's reads as missing), an absolute path, not being destroyed, not attached to
/// another machine (409), in the machine's `region` when one is given, on this host. `None`
/// when it mounts nothing.
pub(crate) fn mount_target(
    s: &ApiState,
    a: &AppRecord,
    config: &MachineConfig,
    region: Option<&str>,
    machine_id: Option<&str>,
) -> Result<Option<VolumeRecord>, ApiError> {
    let Some(mount) = config.mounts.first() else {
        return Ok(None);
    };
    if config.mounts.len() > 1 {
        return Err(ApiError::bad_request(
            "a machine mounts at most one volume (config.mounts has more than one)",
        ));
    }
    let path = mount.path.as_deref().unwrap_or_default();
    let p = std::path::Path::new(path);
    if !p.is_absolute()
        || p.components().count() < 2
        || path.contains('\0')
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ApiError::bad_request(format!(
            "mounts[0].path must be an absolute path other than / without '..', not '{}'",
            short(path)
        )));
    }
    let Some(id) = mount.volume.as_deref().filter(|v| !v.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "mounts[0].volume is required: a volume id of app {} (create one with POST /v1/apps/{}/volumes)",
            a.name, a.name
        )));
    };
    let v = match s.store.get_volume(id)? {
        Some(v) if v.app == a.name && VolumeId::parse(id).is_ok() => v,
        _ => {
            return Err(ApiError::unprocessable(format!(
                "volume '{}' not found in app {}",
                short(id),
                a.name
            )));
        }
    };
    if v.state == PENDING_DESTROY {
        return Err(ApiError::unprocessable(format!(
            "volume {id} is being destroyed"
        )));
    }
    if let Some(other) = &v.attached_machine_id
        && Some(other.as_str()) != machine_id
    {
        return Err(ApiError::conflict(format!(
            "volume {id} is already attached to machine {other}"
        )));
    }
    if let Some(r) = region
        && r != v.region
    {
        return Err(ApiError::unprocessable(format!(
            "volume {id} is in region {}; a machine that mounts it must run there, not in {}",
            v.region,
            short(r)
        )));
    }
    if v.host != s.config.host_name {
        return Err(ApiError::unprocessable(format!(
            "volume {id} lives on host {}; machines that mount it must run there",
            v.host
        )));
    }
    Ok(Some(v))
}

/// Attaches `v` (checked by [`mount_target`]) to machine `machine_id`.
pub(crate) fn attach(s: &ApiState, v: &VolumeRecord, machine_id: &str) -> Result<(), ApiError> {
    if v.attached_machine_id.as_deref() == Some(machine_id) {
        return Ok(());
    }
    let mut rec = v.clone();
    rec.attached_machine_id = Some(machine_id.to_string());
    rec.updated_at = now_ms();
    store_update(s, &rec, v).map(|_| ())
}

/// Undoes [`attach`] after the machine could not be written.
pub(crate) fn detach(s: &ApiState, id: &str, machine_id: &str) {
    for _ in 0..4 {
        let Ok(Some(v)) = s.store.get_volume(id) else {
            return;
        };
        if v.attached_machine_id.as_deref() != Some(machine_id) {
            return;
        }
        let mut rec = v.clone();
        rec.attached_machine_id = None;
        if s.store.update_volume(&rec, v.revision).is_ok() {
            return;
        }
    }
}

/// The number of volumes of an app (for the app views).
pub(crate) fn count(s: &ApiState, app: &str) -> Result<i64, ApiError> {
    Ok(s.store.list_volumes(Some(app))?.len() as i64)
}
