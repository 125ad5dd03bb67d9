//! The content-addressed store on disk.
//!
//! ```text
//! ROOT/
//!   blobs/sha256/<hex>          blobs as received (manifests, configs, compressed layers)
//!   layers/<diff-id hex>/       each layer unpacked once; used as is as an overlay lowerdir
//!   images/manifests/<hex>.json one record per image (manifest digest → config + layers)
//!   images/refs/<hex>.json      one file per reference (sha256 of the reference string)
//!   empty/                      the lowerdir of an image without layers
//!   tmp/<pid>.<start>-<n>-<kind> everything in progress; renamed into place when complete
//! ```
//!
//! Every write goes to `tmp/` first and is renamed into place (`rename(2)` for files,
//! `renameat2(RENAME_NOREPLACE)` for layer directories), so a reader sees a blob, a layer or a
//! record either whole or not at all; a crash leaves only `tmp/` litter, removed at the next
//! [`ImageStore::open`] (entries of processes that are gone) or [`ImageStore::gc`]. Blobs
//! are verified against their digest and layers against their diff id before the rename.
//! Two imports of one layer in this process serialise on a per-layer lock; across processes
//! the loser of the rename discards its copy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use rustix::fs::{Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::{Image, ImageConfig, Layer};
use crate::oci::{self, ConfigFile, Manifest, Platform};
use crate::reference::Reference;
use crate::unpack::{self, UnpackStats};
use crate::usage::{self, DiskUsage};

/// Largest manifest, index or config accepted (registries cap manifests at 4 MiB).
pub const MAX_METADATA_BYTES: u64 = 8 * 1024 * 1024;

/// A handle on one image store directory. Cheap to clone; all clones share locks.
#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    layer_locks: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    /// Digests (blobs and diff ids) an import or pull in progress relies on; GC spares them.
    /// GC holds this lock while it deletes, so pin-then-check is race free.
    pins: Mutex<HashMap<Digest, usize>>,
}

/// An image together with the references that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// The image.
    pub image: Image,
    /// References (tags, pinned digests) pointing at it.
    pub references: Vec<Reference>,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Untagged image records removed.
    pub images_removed: Vec<Digest>,
    /// Layer directories removed (by diff id).
    pub layers_removed: Vec<Digest>,
    /// Blobs removed.
    pub blobs_removed: Vec<Digest>,
    /// Stale temporary entries removed.
    pub temps_removed: usize,
    /// Bytes freed (allocated blocks).
    pub bytes_freed: u64,
}

/// Disk used by the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// `blobs/`.
    pub blobs: DiskUsage,
    /// `layers/`.
    pub layers: DiskUsage,
}

/// Whether [`ImageStore::ensure_layer`] had to unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOutcome {
    /// The layer was already in the store.
    Present,
    /// The layer was unpacked now.
    Unpacked(UnpackStats),
}

#[derive(Debug, Serialize, Deserialize)]
struct RefRecord {
    reference: Reference,
    digest: Digest,
}

/// Keeps digests safe from GC while an operation uses them.
#[derive(Debug)]
pub(crate) struct Pins {
    inner: Arc<Inner>,
    digests: Vec<Digest>,
}

impl Pins {
    pub(crate) fn add(&mut self, digest: &Digest) {
        *lock(&self.inner.pins).entry(digest.clone()).or_insert(0) += 1;
        self.digests.push(digest.clone());
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut pins = lock(&self.inner.pins);
        for d in &self.digests {
            if let Some(n) = pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(d);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a temporary path on drop unless disarmed.
#[derive(Debug)]
pub(crate) struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    pub(crate) fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = remove_any(&path);
        }
    }
}

/// `<pid>.<start time in clock ticks since boot>` of a running process.
fn tag_of(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime); fields after the command name, which may hold spaces, in ')'.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid}.{start}"))
}

/// This process's tag (computed once).
fn process_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let pid = std::process::id();
        tag_of(pid).unwrap_or_else(|| format!("{pid}.0"))
    })
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, and removes temporary entries left by
    /// processes that no longer exist.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("images/manifests"),
            root.join("images/refs"),
            root.join("tmp"),
            root.join("empty"),
        ] {
            fs::create_dir_all(&dir).ctx("create", &dir)?;
        }
        let root = fs::canonicalize(&root).ctx("resolve", &root)?;
        let store = Self {
            inner: Arc::new(Inner {
                root,
                layer_locks: Mutex::new(HashMap::new()),
                pins: Mutex::new(HashMap::new()),
            }),
        };
        store.remove_stale_temps()?;
        Ok(store)
    }

    /// The store's root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(digest.hex())
    }

    /// Where a layer is unpacked (its overlay lowerdir).
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.inner.root.join("layers").join(diff_id.hex())
    }

    /// The empty lowerdir used for images without layers.
    pub(crate) fn empty_dir(&self) -> PathBuf {
        self.inner.root.join("empty")
    }

    /// Whether the blob is stored.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Whether the layer is unpacked.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        fs::symlink_metadata(self.layer_path(diff_id)).is_ok_and(|m| m.is_dir())
    }

    pub(crate) fn pins(&self) -> Pins {
        Pins {
            inner: self.inner.clone(),
            digests: Vec::new(),
        }
    }

    /// A fresh path under `tmp/` (not created): `<pid>.<start time>-<seq>-<kind>`, so that
    /// stale entries can be told from live ones even across pid reuse.
    pub(crate) fn temp_path(&self, kind: &str) -> PathBuf {
        // Process-wide, so handles opened separately on one root never collide.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.inner
            .root
            .join("tmp")
            .join(format!("{}-{seq}-{kind}", process_tag()))
    }

    /// Streams `reader` into the blob store, verifying `expected` when given.
    pub(crate) fn put_blob_reader(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        let mut guard = TempGuard::new(self.temp_path("blob"));
        let file = File::create(guard.path()).ctx("create", guard.path())?;
        let mut writer = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
        let mut reader = reader;
        io::copy(&mut reader, &mut writer).ctx("write", guard.path())?;
        let (buf, digest, size) = writer.finish();
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("write", guard.path(), e.into_error()))?;
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                what: what.to_owned(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        file.sync_all().ctx("sync", guard.path())?;
        drop(file);
        self.commit_blob(&mut guard, &digest)?;
        Ok((digest, size))
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub(crate) fn put_blob_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            self.put_blob_reader(bytes, Some(&digest), "blob")?;
        }
        Ok(digest)
    }

    /// Renames a complete, verified temporary file into the blob store.
    pub(crate) fn commit_blob(&self, temp: &mut TempGuard, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        fs::rename(temp.path(), &dest).ctx("rename blob into", &dest)?;
        temp.disarm();
        Ok(())
    }

    /// Reads a whole blob (bounded by `limit` bytes) and checks its digest.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound(format!("blob {digest}"))
            } else {
                Error::io("open", &path, e)
            }
        })?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .ctx("read", &path)?;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge {
                what: format!("blob {digest}"),
                limit,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", path.display()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn layer_lock(&self, diff_id: &Digest) -> Arc<Mutex<()>> {
        lock(&self.inner.layer_locks)
            .entry(diff_id.clone())
            .or_default()
            .clone()
    }

    /// Unpacks the layer blob `blob` into `layers/<diff_id>` unless it is there already.
    /// The uncompressed stream must hash to `diff_id`.
    pub fn ensure_layer(&self, blob: &Digest, diff_id: &Digest) -> Result<LayerOutcome> {
        let layer_lock = self.layer_lock(diff_id);
        let outcome = {
            let _held = lock(&layer_lock);
            self.unpack_once(blob, diff_id)
        };
        let mut locks = lock(&self.inner.layer_locks);
        if Arc::strong_count(&layer_lock) == 2 {
            locks.remove(diff_id);
        }
        outcome
    }

    fn unpack_once(&self, blob: &Digest, diff_id: &Digest) -> Result<LayerOutcome> {
        let dest = self.layer_path(diff_id);
        if self.has_layer(diff_id) {
            return Ok(LayerOutcome::Present);
        }
        let mut guard = TempGuard::new(self.temp_path("layer"));
        fs::create_dir(guard.path()).ctx("create", guard.path())?;
        let reader = unpack::open_decompressed(&self.blob_path(blob))?;
        let mut hashing = HashingReader::new(reader);
        let stats = unpack::unpack_layer(&mut hashing, guard.path())?;
        let (actual, _) = hashing.finish().ctx("read layer", self.blob_path(blob))?;
        if actual != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed layer {blob}"),
                expected: diff_id.clone(),
                actual,
            });
        }
        // Make the layer durable before it becomes visible.
        let dir = rustix::fs::open(
            guard.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx("open", guard.path())?;
        rustix::fs::syncfs(&dir).ctx("sync", guard.path())?;
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            guard.path(),
            rustix::fs::CWD,
            &dest,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                guard.disarm();
                Ok(LayerOutcome::Unpacked(stats))
            }
            // Another process finished the same layer first; ours is discarded by the guard.
            Err(Errno::EXIST | Errno::NOTEMPTY) => Ok(LayerOutcome::Present),
            Err(e) => Err(Error::io("rename layer into", &dest, e.into())),
        }
    }

    /// Builds an [`Image`] from a manifest and its config bytes, checking they agree.
    pub(crate) fn image_from_parts(
        digest: Digest,
        manifest_media_type: &str,
        manifest: &Manifest,
        config_bytes: &[u8],
    ) -> Result<Image> {
        let config_type = manifest.config.media_type.as_str();
        if !matches!(config_type, "" | oci::OCI_CONFIG | oci::DOCKER_CONFIG) {
            return Err(Error::Unsupported(format!(
                "{digest} is not a container image (config media type {config_type:?})"
            )));
        }
        let config: ConfigFile = serde_json::from_slice(config_bytes).map_err(|e| {
            Error::InvalidImage(format!(
                "config {} of {digest}: {e}",
                manifest.config.digest
            ))
        })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::InvalidImage(format!(
                "{digest}: manifest has {} layers but the config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let t = desc.media_type.as_str();
            let is_tar = t.is_empty()
                || t.ends_with(".tar")
                || t.ends_with("tar+gzip")
                || t.ends_with("tar.gzip")
                || t.ends_with("tar+zstd");
            if !is_tar {
                return Err(Error::Unsupported(format!(
                    "{digest}: layer {} has media type {t:?}, not a tar layer",
                    desc.digest
                )));
            }
            layers.push(Layer {
                digest: desc.digest.clone(),
                diff_id: diff_id.clone(),
                size: desc.size,
                media_type: desc.media_type.clone(),
            });
        }
        Ok(Image {
            digest,
            manifest_media_type: manifest_media_type.to_owned(),
            config_digest: manifest.config.digest.clone(),
            platform: Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                variant: config.variant.clone(),
            },
            created: config.created.clone(),
            layers,
            config: ImageConfig::from_config_file(&config),
        })
    }

    fn manifest_record_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("images/manifests")
            .join(format!("{}.json", digest.hex()))
    }

    fn ref_record_path(&self, reference: &Reference) -> PathBuf {
        let key = Digest::of(reference.to_string().as_bytes());
        self.inner
            .root
            .join("images/refs")
            .join(format!("{}.json", key.hex()))
    }

    /// Writes `bytes` to `dest` atomically (temp file, fsync, rename).
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut guard = TempGuard::new(self.temp_path("record"));
        let mut file = File::create(guard.path()).ctx("create", guard.path())?;
        file.write_all(bytes).ctx("write", guard.path())?;
        file.sync_all().ctx("sync", guard.path())?;
        fs::rename(guard.path(), dest).ctx("rename into", dest)?;
        guard.disarm();
        Ok(())
    }

    /// Records an image whose blobs and layers are all in the store.
    pub(crate) fn save_image(&self, image: &Image) -> Result<()> {
        for layer in &image.layers {
            if !self.has_layer(&layer.diff_id) {
                return Err(Error::LayerMissing(layer.diff_id.clone()));
            }
        }
        let bytes = serde_json::to_vec_pretty(image)
            .map_err(|e| Error::Internal(format!("serialise image record: {e}")))?;
        self.write_atomic(&self.manifest_record_path(&image.digest), &bytes)
    }

    /// Points `reference` at the stored image `digest`.
    pub fn tag(&self, reference: &Reference, digest: &Digest) -> Result<()> {
        if self.image(digest)?.is_none() {
            return Err(Error::NotFound(digest.to_string()));
        }
        let record = RefRecord {
            reference: reference.clone(),
            digest: digest.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::Internal(format!("serialise reference record: {e}")))?;
        self.write_atomic(&self.ref_record_path(reference), &bytes)
    }

    /// Removes `reference`; true if it existed. The image stays until [`ImageStore::gc`].
    pub fn untag(&self, reference: &Reference) -> Result<bool> {
        let path = self.ref_record_path(reference);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    /// The image stored under manifest digest `digest`.
    pub fn image(&self, digest: &Digest) -> Result<Option<Image>> {
        let path = self.manifest_record_path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidImage(format!("record {}: {e}", path.display())))
    }

    /// The image `reference` names locally: its recorded target, or for a reference pinned
    /// by digest, the image with that manifest digest.
    pub fn resolve(&self, reference: &Reference) -> Result<Option<Image>> {
        let path = self.ref_record_path(reference);
        match fs::read(&path) {
            Ok(bytes) => {
                let record: RefRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::InvalidImage(format!("record {}: {e}", path.display())))?;
                return self.image(&record.digest);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", &path, e)),
        }
        match reference.digest() {
            Some(digest) => self.image(digest),
            None => Ok(None),
        }
    }

    /// Looks up `name`: a digest (`sha256:…`) or a reference in any docker form.
    pub fn lookup(&self, name: &str) -> Result<Option<Image>> {
        if name.starts_with("sha256:") {
            return self.image(&name.parse()?);
        }
        self.resolve(&Reference::parse(name)?)
    }

    /// Every reference and the digest it points at.
    pub fn references(&self) -> Result<Vec<(Reference, Digest)>> {
        let dir = self.inner.root.join("images/refs");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let path = entry.ctx("list", &dir)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            if let Ok(record) = serde_json::from_slice::<RefRecord>(&bytes) {
                out.push((record.reference, record.digest));
            }
        }
        out.sort_by_key(|(r, _)| r.to_string());
        Ok(out)
    }

    fn image_digests(&self) -> Result<Vec<Digest>> {
        let dir = self.inner.root.join("images/manifests");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let name = entry.ctx("list", &dir)?.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(d) = Digest::from_hex(hex) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every stored image with its references.
    pub fn images(&self) -> Result<Vec<StoredImage>> {
        let mut refs: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
        for (r, d) in self.references()? {
            refs.entry(d).or_default().push(r);
        }
        let mut out = Vec::new();
        for digest in self.image_digests()? {
            if let Some(image) = self.image(&digest)? {
                let references = refs.remove(&digest).unwrap_or_default();
                out.push(StoredImage { image, references });
            }
        }
        Ok(out)
    }

    /// Removes the image record and every reference to it. Layers and blobs stay until
    /// [`ImageStore::gc`]. True if it existed.
    pub fn remove_image(&self, digest: &Digest) -> Result<bool> {
        for (r, d) in self.references()? {
            if d == *digest {
                self.untag(&r)?;
            }
        }
        let path = self.manifest_record_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    /// Garbage collection. Keeps every image that a reference names or that is in `in_use`
    /// (the manifest digests of images machines run); removes other image records, then every
    /// layer directory and blob no kept image needs, and stale temporaries. Layers and blobs
    /// an import or pull in progress relies on, and layers a mounted overlay (in this mount
    /// namespace) uses, are never removed.
    pub fn gc(&self, in_use: &[Digest]) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut keep: HashSet<Digest> = in_use.iter().cloned().collect();
        keep.extend(self.references()?.into_iter().map(|(_, d)| d));

        let pins = lock(&self.inner.pins);
        let mut live_blobs: HashSet<Digest> = HashSet::new();
        let mut live_layers: HashSet<Digest> = HashSet::new();
        for digest in self.image_digests()? {
            let Some(image) = self.image(&digest)? else {
                continue;
            };
            if !keep.contains(&digest) && !pins.contains_key(&digest) {
                let path = self.manifest_record_path(&digest);
                fs::remove_file(&path).ctx("remove", &path)?;
                report.images_removed.push(digest);
                continue;
            }
            live_blobs.insert(image.digest.clone());
            live_blobs.insert(image.config_digest.clone());
            for layer in &image.layers {
                live_blobs.insert(layer.digest.clone());
                live_layers.insert(layer.diff_id.clone());
            }
        }
        let mounted = crate::rootfs::mounted_lowerdirs();

        let layers_dir = self.inner.root.join("layers");
        for entry in fs::read_dir(&layers_dir).ctx("list", &layers_dir)? {
            let entry = entry.ctx("list", &layers_dir)?;
            let Some(diff_id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            let path = entry.path();
            if live_layers.contains(&diff_id)
                || pins.contains_key(&diff_id)
                || mounted.contains(&path)
            {
                continue;
            }
            report.bytes_freed += usage::disk_usage(&path).map(|u| u.bytes).unwrap_or(0);
            // Rename first so a half-removed layer is never visible under its name.
            let doomed = self.temp_path("gc");
            fs::rename(&path, &doomed).ctx("rename", &path)?;
            remove_any(&doomed).ctx("remove", &doomed)?;
            report.layers_removed.push(diff_id);
        }

        let blobs_dir = self.inner.root.join("blobs/sha256");
        for entry in fs::read_dir(&blobs_dir).ctx("list", &blobs_dir)? {
            let entry = entry.ctx("list", &blobs_dir)?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            if live_blobs.contains(&digest) || pins.contains_key(&digest) {
                continue;
            }
            let path = entry.path();
            report.bytes_freed += usage::disk_usage(&path).map(|u| u.bytes).unwrap_or(0);
            fs::remove_file(&path).ctx("remove", &path)?;
            report.blobs_removed.push(digest);
        }
        drop(pins);
        report.temps_removed = self.remove_stale_temps()?;
        Ok(report)
    }

    /// Removes `tmp/` entries of processes that no longer exist (and GC leftovers).
    fn remove_stale_temps(&self) -> Result<usize> {
        let dir = self.inner.root.join("tmp");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let name = entry.file_name();
            let owner = name.to_string_lossy();
            let owner = owner.split('-').next().unwrap_or("");
            let live = owner == process_tag()
                || owner
                    .split_once('.')
                    .and_then(|(pid, _)| pid.parse::<u32>().ok())
                    .and_then(tag_of)
                    .is_some_and(|tag| tag == owner);
            if !live {
                remove_any(&entry.path()).ctx("remove", entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Disk used by blobs and layers.
    pub fn usage(&self) -> Result<StoreUsage> {
        let blobs = self.inner.root.join("blobs");
        let layers = self.inner.root.join("layers");
        Ok(StoreUsage {
            blobs: usage::disk_usage(&blobs).ctx("measure", &blobs)?,
            layers: usage::disk_usage(&layers).ctx("measure", &layers)?,
        })
    }

    /// Disk used by one unpacked layer.
    pub fn layer_usage(&self, diff_id: &Digest) -> Result<DiskUsage> {
        let path = self.layer_path(diff_id);
        usage::disk_usage(&path).ctx("measure", &path)
    }
}
