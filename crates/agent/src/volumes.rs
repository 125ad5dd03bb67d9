//! Volumes on this host: the agent side of §2.9.
//!
//! The API records desired state (a volume `creating` from nothing, a snapshot or another
//! volume; a bigger `size_gb`; a snapshot `running`; `pending_destroy`) and the store's
//! change log kicks this module, which makes the host match ([`disk`] does the work) and
//! reports back (`created`, the snapshot's size and digest, the row deleted). A volume is
//! handled by one task at a time (a lock per volume, also taken by machine preparation and
//! garbage collection). Machines get their volume through [`Agent::volume_binds`] when they
//! are prepared: made if still `creating`, grown if a grow is pending, mounted, bind-mounted
//! read-write at the mount path. A volume no machine is attached to is unmounted.
//!
//! Snapshots are kept `snapshot_retention` days and at most `snapshot_retention` of them
//! (newest first); with `auto_backup_enabled` one is taken a day.

mod disk;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hangar_runtime::{BindMount, ContainerId, ContainerState, Driver};
use hangar_store::{MachineRecord, SnapshotRecord, StoreError, VolumeRecord};
use tokio::sync::mpsc;

pub use disk::release_volumes;
use disk::{Disks, Source};

use crate::reconcile::AgentError;
use crate::{Agent, lock};

/// Volume states (the reference's names).
pub(crate) const CREATING: &str = "creating";
pub(crate) const CREATED: &str = "created";
pub(crate) const EXTENDING: &str = "extending";
pub(crate) const PENDING_DESTROY: &str = "pending_destroy";
/// Snapshot statuses.
pub(crate) const SNAPSHOT_RUNNING: &str = "running";
pub(crate) const SNAPSHOT_CREATED: &str = "created";
pub(crate) const SNAPSHOT_FAILED: &str = "failed";

const DAY_MS: i64 = 86_400_000;
const GB: i64 = 1 << 30;

/// The agent's volume state: the disks, one worker and one lock per volume.
pub(crate) struct Volumes {
    disks: Disks,
    workers: Mutex<HashMap<String, mpsc::Sender<()>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Volumes {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            disks: Disks::new(dir),
            workers: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// Forgets a volume that is gone (its lock only when nobody holds it).
    fn forget(&self, id: &str) {
        lock(&self.workers).remove(id);
        let mut locks = lock(&self.locks);
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(id);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A new snapshot id: `vs_` + 16 base-32 characters.
pub(crate) fn snapshot_id() -> String {
    let mut b = [0u8; 10];
    if getrandom::fill(&mut b).is_err() {
        b[..8].copy_from_slice(&now_ms().to_le_bytes());
    }
    let v = hangar_domain::VolumeId::from_bytes(b);
    format!("vs_{}", &v.as_str()[4..])
}

/// The snapshots retention removes (of a volume's, newest first): older than their
/// retention, or beyond the newest `keep`. Snapshots being taken are never removed.
pub(crate) fn expired(snapshots: &[SnapshotRecord], keep: i64, now: i64) -> Vec<String> {
    let keep = keep.max(1) as usize;
    snapshots
        .iter()
        .filter(|s| s.status != SNAPSHOT_RUNNING)
        .enumerate()
        .filter(|(i, s)| *i >= keep || s.created_at + s.retention_days.max(1) * DAY_MS <= now)
        .map(|(_, s)| s.id.clone())
        .collect()
}

/// Whether the daily automatic snapshot of `v` is due (a day after the newest snapshot, or
/// after the volume was made).
pub(crate) fn backup_due(v: &VolumeRecord, newest: Option<i64>, now: i64) -> bool {
    v.auto_backup_enabled && v.state == CREATED && now - newest.unwrap_or(v.created_at) >= DAY_MS
}

/// A mount path a machine may have: absolute, not `/`, no `..`, no NUL.
pub(crate) fn valid_mount_path(p: &str) -> bool {
    let path = std::path::Path::new(p);
    path.is_absolute()
        && path.components().count() > 1
        && !p.contains('\0')
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, disk::DiskError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Host(e.to_string()))?
        .map_err(|e| AgentError::Host(e.to_string()))
}

impl<D: Driver> Agent<D> {
    /// Asks the volume's worker to look at it again (coalesced).
    pub(crate) fn kick_volume(self: &Arc<Self>, id: &str) {
        let mut workers = lock(&self.volumes.workers);
        if let Some(tx) = workers.get(id) {
            match tx.try_send(()) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => return,
                // Its task was stopped with an earlier run of the agent.
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        }
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let agent = Arc::clone(self);
        let vid = id.to_string();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                if let Err(e) = agent.reconcile_volume(&vid).await {
                    eprintln!("hangar-agent: volume {vid}: {e}");
                }
            }
        });
        self.track(task.abort_handle());
        let _ = tx.try_send(());
        workers.insert(id.to_string(), tx);
    }

    /// Kicks every volume (start-up, and the periodic pass for snapshots and retention).
    pub(crate) fn kick_volumes(self: &Arc<Self>) -> Result<(), StoreError> {
        for v in self.store.list_volumes(None)? {
            self.kick_volume(&v.id);
        }
        Ok(())
    }

    /// Moves a volume from state `from` to `to` unless someone else changed its state.
    fn volume_transition(
        &self,
        id: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<VolumeRecord>, AgentError> {
        for _ in 0..8 {
            let Some(v) = self.store.get_volume(id)? else {
                return Ok(None);
            };
            if v.state != from {
                return Ok(Some(v));
            }
            let mut rec = v.clone();
            rec.state = to.to_string();
            rec.updated_at = now_ms();
            match self.store.update_volume(&rec, v.revision) {
                Ok(stored) => return Ok(Some(stored)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.store.get_volume(id)?)
    }

    /// Makes a `creating` volume and grows it to its size. The caller holds its lock.
    async fn ensure_volume(&self, v: VolumeRecord) -> Result<VolumeRecord, AgentError> {
        let mut v = v;
        let disks = self.volumes.disks.clone();
        if v.state == CREATING || !disks.exists(&v.id) {
            if v.state != CREATING {
                return Err(AgentError::Host(format!(
                    "volume {} ({}) has no disk on this host",
                    v.id, v.state
                )));
            }
            let (source, from) = match (&v.source_snapshot_id, &v.source_volume_id) {
                (Some(s), _) => {
                    let snap = self.store.get_snapshot(s)?.ok_or_else(|| {
                        AgentError::Invalid(format!("snapshot {s} no longer exists"))
                    })?;
                    (
                        Source::Snapshot(disks.snapshot_path(&snap.volume_id, &snap.id)),
                        Some(snap.volume_id),
                    )
                }
                (None, Some(src)) => (Source::Volume(src.clone()), Some(src.clone())),
                (None, None) => (Source::Blank, None),
            };
            // A copy holds the volume it copies from (its image, or its snapshot's archive
            // that retention could remove) while copying. Order: new volume, then source; a
            // volume being made is never a source.
            let src_lock = from.map(|f| self.volumes.lock_of(&f));
            let _src = match &src_lock {
                Some(l) => Some(l.lock().await),
                None => None,
            };
            let (d, id, size) = (disks.clone(), v.id.clone(), v.size_gb);
            blocking(move || d.create(&id, size, &source)).await?;
            drop(_src);
            match self.volume_transition(&v.id, CREATING, CREATED)? {
                Some(now) => v = now,
                None => return Err(AgentError::Invalid(format!("volume {} is gone", v.id))),
            }
        }
        let (d, id, size) = (disks.clone(), v.id.clone(), v.size_gb);
        blocking(move || d.grow(&id, size)).await?;
        if v.state == EXTENDING
            && let Some(now) = self.volume_transition(&v.id, EXTENDING, CREATED)?
        {
            v = now;
        }
        Ok(v)
    }

    /// One pass over a volume: destroy, make, grow, snapshots, retention, unmount when idle.
    async fn reconcile_volume(self: &Arc<Self>, id: &str) -> Result<(), AgentError> {
        let vlock = self.volumes.lock_of(id);
        let guard = vlock.lock().await;
        let Some(v) = self.store.get_volume(id)? else {
            drop(guard);
            self.volumes.forget(id);
            return Ok(());
        };
        let disks = self.volumes.disks.clone();
        if v.state == PENDING_DESTROY {
            let (d, vid) = (disks.clone(), id.to_string());
            blocking(move || d.destroy(&vid)).await?;
            self.store.delete_volume(id)?;
            drop(guard);
            self.volumes.forget(id);
            return Ok(());
        }
        let v = self.ensure_volume(v).await?;
        let now = now_ms();
        let snapshots = self.store.list_snapshots(id)?;
        let mut wanted: Vec<SnapshotRecord> = snapshots
            .iter()
            .filter(|s| s.status == SNAPSHOT_RUNNING)
            .cloned()
            .collect();
        if wanted.is_empty() && backup_due(&v, snapshots.first().map(|s| s.created_at), now) {
            let s = SnapshotRecord {
                id: snapshot_id(),
                volume_id: v.id.clone(),
                status: SNAPSHOT_RUNNING.into(),
                size: 0,
                volume_size: v.size_gb * GB,
                digest: String::new(),
                retention_days: v.snapshot_retention,
                created_at: now,
            };
            self.store.create_snapshot(&s)?;
            wanted.push(s);
        }
        drop(guard);
        for s in wanted {
            self.take_snapshot(&v, s).await;
        }
        let _guard = vlock.lock().await;
        let Some(v) = self.store.get_volume(id)? else {
            return Ok(());
        };
        let snapshots = self.store.list_snapshots(id)?;
        for sid in expired(&snapshots, v.snapshot_retention, now_ms()) {
            self.store.delete_snapshot(&sid)?;
            disks.remove_snapshot(id, &sid);
        }
        // Archives whose snapshot is gone (a crash between the two steps above).
        let known: HashSet<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
        for sid in disks.snapshot_files(id) {
            if !known.contains(sid.as_str()) {
                disks.remove_snapshot(id, &sid);
            }
        }
        if v.attached_machine_id.is_none() && disks.is_mounted(id) {
            let (d, vid) = (disks.clone(), id.to_string());
            blocking(move || d.unmount(&vid)).await?;
        }
        Ok(())
    }

    /// Takes one snapshot: the image is copied under the volume's lock (its filesystem
    /// frozen meanwhile if mounted), then compressed without holding the volume.
    async fn take_snapshot(&self, v: &VolumeRecord, mut s: SnapshotRecord) {
        let disks = self.volumes.disks.clone();
        let copied = {
            let vlock = self.volumes.lock_of(&v.id);
            let _g = vlock.lock().await;
            let (d, vid, sid) = (disks.clone(), v.id.clone(), s.id.clone());
            blocking(move || d.snapshot_copy(&vid, &sid)).await
        };
        let archived = match copied {
            Ok(copy) => {
                let (d, vid, sid) = (disks.clone(), v.id.clone(), s.id.clone());
                blocking(move || d.archive(&vid, &sid, &copy)).await
            }
            Err(e) => Err(e),
        };
        match archived {
            Ok(a) => {
                s.status = SNAPSHOT_CREATED.into();
                s.size = a.size as i64;
                s.digest = a.digest;
                s.volume_size = v.size_gb * GB;
            }
            Err(e) => {
                eprintln!("hangar-agent: volume {}: snapshot {}: {e}", v.id, s.id);
                s.status = SNAPSHOT_FAILED.into();
            }
        }
        if let Err(e) = self.store.update_snapshot(&s) {
            // Deleted meanwhile (with its volume, or by retention): nothing to keep.
            disks.remove_snapshot(&v.id, &s.id);
            if !matches!(e, StoreError::NotFound(_)) {
                eprintln!("hangar-agent: volume {}: snapshot {}: {e}", v.id, s.id);
            }
        }
    }

    /// The bind mounts of a machine's volumes, each made, grown and mounted.
    pub(crate) async fn volume_binds(
        &self,
        m: &MachineRecord,
    ) -> Result<Vec<BindMount>, AgentError> {
        let mut binds = Vec::new();
        for (i, mount) in m.config.mounts.iter().enumerate() {
            let id = mount
                .volume
                .as_deref()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| AgentError::Invalid(format!("mounts[{i}] names no volume")))?;
            let path = mount.path.as_deref().unwrap_or_default();
            if !valid_mount_path(path) {
                return Err(AgentError::Invalid(format!(
                    "mounts[{i}].path must be an absolute path other than / without '..'"
                )));
            }
            let vlock = self.volumes.lock_of(id);
            let _g = vlock.lock().await;
            let v = self
                .store
                .get_volume(id)?
                .ok_or_else(|| AgentError::Invalid(format!("volume {id} does not exist")))?;
            if v.attached_machine_id.as_deref() != Some(m.id.as_str()) {
                return Err(AgentError::Invalid(format!(
                    "volume {id} is not attached to machine {}",
                    m.id
                )));
            }
            if v.state == PENDING_DESTROY {
                return Err(AgentError::Invalid(format!(
                    "volume {id} is being destroyed"
                )));
            }
            self.ensure_volume(v).await?;
            let disks = self.volumes.disks.clone();
            if disks.grow_pending(id) {
                // Grown offline: the machine's previous container lets go of it first.
                let cid =
                    ContainerId::parse(&m.id).map_err(|e| AgentError::Invalid(e.to_string()))?;
                if matches!(
                    self.driver.state(&cid),
                    Ok(ContainerState::Created | ContainerState::Stopped)
                ) {
                    let driver = self.driver.clone();
                    tokio::task::spawn_blocking(move || driver.delete(&cid))
                        .await
                        .map_err(|e| AgentError::Host(e.to_string()))??;
                }
                let (d, vid) = (disks.clone(), id.to_string());
                blocking(move || d.finish_grow(&vid)).await?;
            }
            let (d, vid) = (disks.clone(), id.to_string());
            let source = blocking(move || d.mount(&vid)).await?;
            binds.push(BindMount {
                source,
                destination: PathBuf::from(path),
                read_only: false,
            });
        }
        Ok(binds)
    }

    /// Whether one of the machine's volumes waits for an offline grow (its next start then
    /// prepares a new container instead of starting the ready one).
    pub(crate) fn volume_grow_pending(&self, m: &MachineRecord) -> bool {
        m.config
            .mounts
            .iter()
            .filter_map(|x| x.volume.as_deref())
            .any(|id| self.volumes.disks.grow_pending(id))
    }

    /// Removes mounts, loop devices and directories of volumes the store no longer has, and
    /// thaws live ones a crash may have left frozen.
    pub(crate) async fn collect_volume_garbage(&self) -> Result<(), AgentError> {
        let live: HashSet<String> = self
            .store
            .list_volumes(None)?
            .into_iter()
            .map(|v| v.id)
            .collect();
        let disks = self.volumes.disks.clone();
        let d = disks.clone();
        let present = tokio::task::spawn_blocking(move || d.present())
            .await
            .map_err(|e| AgentError::Host(e.to_string()))?;
        for id in present {
            let vlock = self.volumes.lock_of(&id);
            let _g = vlock.lock().await;
            let (d, vid) = (disks.clone(), id.clone());
            if live.contains(&id) {
                let _ = tokio::task::spawn_blocking(move || d.thaw(&vid)).await;
                continue;
            }
            if let Err(e) = blocking(move || d.destroy(&vid)).await {
                eprintln!("hangar-agent: removing what is left of volume {id}: {e}");
            }
            drop(_g);
            self.volumes.forget(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, at: i64, status: &str) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            volume_id: "vol_a".into(),
            status: status.into(),
            size: 1,
            volume_size: 1,
            digest: String::new(),
            retention_days: 2,
            created_at: at,
        }
    }

    #[test]
    fn retention_keeps_the_newest_within_their_days() {
        let now = 10 * DAY_MS;
        let s = vec![
            snap("running", now, SNAPSHOT_RUNNING),
            snap("a", now - 1, SNAPSHOT_CREATED),
            snap("b", now - 2, SNAPSHOT_CREATED),
            snap("c", now - 3, SNAPSHOT_FAILED),
            snap("old", now - 2 * DAY_MS, SNAPSHOT_CREATED),
        ];
        assert_eq!(expired(&s, 5, now), vec!["old"]);
        assert_eq!(expired(&s, 2, now), vec!["c", "old"]);
        assert_eq!(
            expired(&s, 0, now),
            vec!["b", "c", "old"],
            "at least one is kept"
        );
        assert!(expired(&s[..1], 1, now).is_empty(), "never one being taken");
    }

    #[test]
    fn daily_backups() {
        let v = VolumeRecord {
            id: "vol_a".into(),
            app: "a".into(),
            name: "data".into(),
            region: "local".into(),
            zone: "h".into(),
            host: "h".into(),
            size_gb: 1,
            state: CREATED.into(),
            encrypted: false,
            fstype: "ext4".into(),
            attached_machine_id: None,
            snapshot_retention: 5,
            auto_backup_enabled: true,
            source_volume_id: None,
            source_snapshot_id: None,
            created_at: 0,
            updated_at: 0,
            revision: 0,
        };
        assert!(!backup_due(&v, None, DAY_MS - 1));
        assert!(backup_due(&v, None, DAY_MS));
        assert!(!backup_due(&v, Some(DAY_MS), DAY_MS + 5));
        let off = VolumeRecord {
            auto_backup_enabled: false,
            ..v.clone()
        };
        assert!(!backup_due(&off, None, 5 * DAY_MS));
        let creating = VolumeRecord {
            state: CREATING.into(),
            ..v
        };
        assert!(!backup_due(&creating, None, 5 * DAY_MS));
    }

    #[test]
    fn mount_paths_and_ids() {
        assert!(valid_mount_path("/data"));
        assert!(valid_mount_path("/var/lib/db"));
        for bad in ["/", "data", "/a/../b", "", "/a\0"] {
            assert!(!valid_mount_path(bad), "{bad:?}");
        }
        let id = snapshot_id();
        assert!(id.starts_with("vs_") && id.len() == 19, "{id}");
        assert_ne!(snapshot_id(), id);
    }
}
