//! Volume disks on this host, blocking: a sparse ext4 image per volume, loop-mounted on the
//! host while a machine uses it, grown in place, copied (fork) and archived (snapshots).
//!
//! Layout under `DATA/volumes/<id>/`: `disk.img` (the filesystem), `mnt/` (its mount point
//! while in use), `grow-pending` (the image was grown but the mounted filesystem could not be:
//! it is grown offline before the next mount), `snapshots/<snapshot id>.tar.gz` (a gzipped tar
//! holding one sparse `disk.img`). New images are built as `disk.img.new` and renamed, so a
//! crash never leaves a half-made `disk.img`.
//!
//! Everything here is idempotent and uses the system's e2fsprogs and util-linux (`mkfs.ext4`,
//! `e2fsck`, `resize2fs`, `mount`, `umount`, `losetup`, `fsfreeze`) and `cp --sparse=always`.
//! The host never walks a tenant's filesystem: copies and snapshots are of the image, taken
//! while the mounted filesystem is frozen, so they are consistent and no path inside the
//! volume is ever followed on the host.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

const IMAGE: &str = "disk.img";
const NEW_IMAGE: &str = "disk.img.new";
const MOUNT: &str = "mnt";
const GROW_PENDING: &str = "grow-pending";
const SNAPSHOTS: &str = "snapshots";
/// The one entry of a snapshot archive.
const ARCHIVE_ENTRY: &str = "disk.img";
const GB: u64 = 1 << 30;

/// Why a disk operation failed (the message says which step and what the tool printed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DiskError(String);

type Result<T> = std::result::Result<T, DiskError>;

fn io_err(what: &str, p: &Path) -> impl Fn(io::Error) -> DiskError {
    let what = format!("{what} {}", p.display());
    move |e| DiskError(format!("{what}: {e}"))
}

/// Runs a tool; its stderr (bounded) is the error.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| DiskError(format!("running {program}: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if msg.is_empty() {
        msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    msg.truncate(2000);
    Err(DiskError(format!(
        "{program} failed ({}): {msg}",
        out.status
    )))
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

/// `e2fsck -f -p`: exit codes 1 and 2 (errors corrected) are success.
fn fsck(image: &Path) -> Result<()> {
    let out = Command::new("e2fsck")
        .args(["-f", "-p"])
        .arg(image)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| DiskError(format!("running e2fsck: {e}")))?;
    match out.status.code() {
        Some(0..=2) => Ok(()),
        _ => Err(DiskError(format!(
            "e2fsck {} failed ({}): {}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        ))),
    }
}

/// Mount points and sources of `/proc/self/mountinfo` (octal escapes undone).
pub(crate) fn parse_mountinfo(text: &str) -> Vec<(PathBuf, String)> {
    fn unescape(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            {
                let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
                out.push(v);
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(4)?;
            let sep = f.iter().position(|x| *x == "-")?;
            let source = f.get(sep + 2)?;
            Some((PathBuf::from(unescape(point)), unescape(source)))
        })
        .collect()
}

fn mounts() -> Vec<(PathBuf, String)> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Loop devices and their backing files (`/dev/loopN`, path), from sysfs.
fn loop_devices() -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim_end_matches('\n');
            let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
            Some((format!("/dev/{name}"), PathBuf::from(backing)))
        })
        .collect()
}

/// Thaws a frozen filesystem when dropped (whatever happened while it was frozen).
struct Frozen<'a>(&'a Path);

impl<'a> Frozen<'a> {
    fn freeze(mnt: &'a Path) -> Result<Self> {
        run("fsfreeze", args!["--freeze", mnt])?;
        Ok(Self(mnt))
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(e) = run("fsfreeze", args!["--unfreeze", self.0]) {
            eprintln!("hangar-agent: thawing {}: {e}", self.0.display());
        }
    }
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// An empty filesystem.
    Blank,
    /// A snapshot archive.
    Snapshot(PathBuf),
    /// Another volume (copied while its filesystem is frozen if it is mounted).
    Volume(String),
}

/// What growing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grown {
    /// Already that big.
    Unchanged,
    /// The filesystem has the new size.
    Done,
    /// The image has the new size; the filesystem gets it before its next mount.
    Pending,
}

/// A snapshot archive as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Archived {
    /// Bytes on disk.
    pub size: u64,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
}

/// The volume disks under one directory (`DATA/volumes`).
#[derive(Debug, Clone)]
pub(crate) struct Disks {
    dir: PathBuf,
}

impl Disks {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn vol(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn image(&self, id: &str) -> PathBuf {
        self.vol(id).join(IMAGE)
    }

    /// Where the volume's filesystem is mounted on the host (bind-mounted into its machine).
    pub(crate) fn mount_point(&self, id: &str) -> PathBuf {
        self.vol(id).join(MOUNT)
    }

    /// The archive of a snapshot of volume `id`.
    pub(crate) fn snapshot_path(&self, id: &str, snapshot: &str) -> PathBuf {
        self.vol(id)
            .join(SNAPSHOTS)
            .join(format!("{snapshot}.tar.gz"))
    }

    /// Whether the volume's image exists.
    pub(crate) fn exists(&self, id: &str) -> bool {
        self.image(id).is_file()
    }

    /// Whether the filesystem was grown on disk but not yet inside.
    pub(crate) fn grow_pending(&self, id: &str) -> bool {
        self.vol(id).join(GROW_PENDING).exists()
    }

    pub(crate) fn is_mounted(&self, id: &str) -> bool {
        let mnt = self.mount_point(id);
        mounts().iter().any(|(p, _)| *p == mnt)
    }

    fn loop_of(&self, id: &str) -> Option<String> {
        let image = self.image(id);
        loop_devices()
            .into_iter()
            .find(|(_, b)| *b == image)
            .map(|(d, _)| d)
    }

    /// Makes the volume's image (`size_gb`, ext4) unless it exists.
    pub(crate) fn create(&self, id: &str, size_gb: i64, source: &Source) -> Result<()> {
        let vol = self.vol(id);
        if self.exists(id) {
            return Ok(());
        }
        std::fs::create_dir_all(&vol).map_err(io_err("creating", &vol))?;
        let new = vol.join(NEW_IMAGE);
        let _ = std::fs::remove_file(&new);
        let size = size_gb.max(1) as u64 * GB;
        let made = (|| match source {
            Source::Blank => {
                let f = std::fs::File::create(&new).map_err(io_err("creating", &new))?;
                f.set_len(size).map_err(io_err("sizing", &new))?;
                drop(f);
                // The image reads as zeros: the journal need not be written (it stays sparse).
                run(
                    "mkfs.ext4",
                    args![
                        "-F",
                        "-q",
                        "-E",
                        "lazy_journal_init=1",
                        "-L",
                        "hangar-vol",
                        &new
                    ],
                )?;
                Ok(())
            }
            Source::Snapshot(archive) => {
                self.unpack(archive, &new)?;
                self.grow_image(&new, size)
            }
            Source::Volume(src) => {
                self.copy_image(src, &new)?;
                self.grow_image(&new, size)
            }
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(&new);
            return Err(e);
        }
        let image = self.image(id);
        std::fs::rename(&new, &image).map_err(io_err("renaming", &new))?;
        Ok(())
    }

    /// Copies volume `src`'s image to `dst` (sparse), frozen while it is mounted.
    fn copy_image(&self, src: &str, dst: &Path) -> Result<()> {
        let image = self.image(src);
        if !image.is_file() {
            return Err(DiskError(format!("volume {src} has no disk on this host")));
        }
        let mnt = self.mount_point(src);
        let _frozen = if self.is_mounted(src) {
            Some(Frozen::freeze(&mnt)?)
        } else if self.loop_of(src).is_some() {
            // In use without a host mount (it can not be frozen from here): mount it first.
            self.mount(src)?;
            Some(Frozen::freeze(&mnt)?)
        } else {
            None
        };
        run(
            "cp",
            args!["--sparse=always", "--reflink=auto", &image, dst],
        )?;
        Ok(())
    }

    /// Grows an unmounted image file to `size` bytes, filesystem included.
    fn grow_image(&self, image: &Path, size: u64) -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(io_err("opening", image))?;
        let have = f.metadata().map_err(io_err("reading", image))?.len();
        if have < size {
            f.set_len(size).map_err(io_err("growing", image))?;
        }
        drop(f);
        fsck(image)?;
        run("resize2fs", args![image])?;
        Ok(())
    }

    /// Extracts the one image of a snapshot archive to `dst` (holes kept).
    fn unpack(&self, archive: &Path, dst: &Path) -> Result<()> {
        let f = std::fs::File::open(archive).map_err(io_err("opening", archive))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(f)));
        let entries = tar.entries().map_err(io_err("reading", archive))?;
        for entry in entries {
            let mut entry = entry.map_err(io_err("reading", archive))?;
            let name = entry.path().map_err(io_err("reading", archive))?;
            if name.as_ref() != Path::new(ARCHIVE_ENTRY) {
                continue;
            }
            if !entry.header().entry_type().is_file()
                && entry.header().entry_type() != tar::EntryType::GNUSparse
            {
                return Err(DiskError(format!(
                    "snapshot {} holds no regular disk image",
                    archive.display()
                )));
            }
            entry.set_preserve_mtime(false);
            entry.set_preserve_permissions(false);
            entry.unpack(dst).map_err(io_err("unpacking", archive))?;
            return Ok(());
        }
        Err(DiskError(format!(
            "snapshot {} holds no {ARCHIVE_ENTRY}",
            archive.display()
        )))
    }

    /// Mounts the volume's filesystem at its mount point (idempotent).
    pub(crate) fn mount(&self, id: &str) -> Result<PathBuf> {
        let mnt = self.mount_point(id);
        if self.is_mounted(id) {
            return Ok(mnt);
        }
        let image = self.image(id);
        if !image.is_file() {
            return Err(DiskError(format!("volume {id} has no disk on this host")));
        }
        std::fs::create_dir_all(&mnt).map_err(io_err("creating", &mnt))?;
        // A loop device whose last user just went may vanish under us: look again.
        let mut attempt = 0;
        loop {
            let done = match self.loop_of(id) {
                // Still attached (mounted inside a machine, the host mount lost): that device.
                Some(dev) => run(
                    "mount",
                    args!["-t", "ext4", "-o", "nosuid,nodev", &dev, &mnt],
                ),
                None => run(
                    "mount",
                    args!["-t", "ext4", "-o", "loop,nosuid,nodev", &image, &mnt],
                ),
            };
            match done {
                Ok(_) => return Ok(mnt),
                Err(_) if attempt < 3 && !self.is_mounted(id) => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Unmounts the volume and detaches its loop device (idempotent). A filesystem still
    /// used elsewhere is detached lazily (the kernel frees it with its last user).
    pub(crate) fn unmount(&self, id: &str) -> Result<()> {
        self.unmount_under(&self.vol(id))?;
        let image = self.image(id);
        for (dev, backing) in loop_devices() {
            if backing == image {
                // Busy devices are auto-cleared by the kernel once their last user goes.
                let _ = run("losetup", args!["-d", &dev]);
            }
        }
        Ok(())
    }

    /// Unmounts everything mounted under `dir`, deepest first.
    fn unmount_under(&self, dir: &Path) -> Result<()> {
        let mut points: Vec<PathBuf> = mounts()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with(dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points.dedup();
        for p in points {
            if run("umount", args![&p]).is_err() {
                run("umount", args!["-l", &p])?;
            }
        }
        Ok(())
    }

    /// Grows the volume to `size_gb`: the image at once, the filesystem online when it is
    /// mounted (else offline). When the kernel refuses an online resize (it needs
    /// CAP_SYS_RESOURCE) the filesystem is grown before its next mount ([`Disks::finish_grow`]).
    pub(crate) fn grow(&self, id: &str, size_gb: i64) -> Result<Grown> {
        let image = self.image(id);
        let want = size_gb.max(1) as u64 * GB;
        let have = std::fs::metadata(&image)
            .map_err(io_err("reading", &image))?
            .len();
        if have >= want {
            return Ok(if self.grow_pending(id) {
                Grown::Pending
            } else {
                Grown::Unchanged
            });
        }
        match (self.is_mounted(id), self.loop_of(id)) {
            (_, None) => {
                self.grow_image(&image, want)?;
                let _ = std::fs::remove_file(self.vol(id).join(GROW_PENDING));
                Ok(Grown::Done)
            }
            (mounted, Some(dev)) => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&image)
                    .and_then(|f| f.set_len(want))
                    .map_err(io_err("growing", &image))?;
                run("losetup", args!["-c", &dev])?;
                if mounted && run("resize2fs", args![&dev]).is_ok() {
                    return Ok(Grown::Done);
                }
                self.mark_pending(id)?;
                Ok(Grown::Pending)
            }
        }
    }

    fn mark_pending(&self, id: &str) -> Result<()> {
        let p = self.vol(id).join(GROW_PENDING);
        std::fs::write(&p, b"").map_err(io_err("writing", &p))
    }

    /// Grows the filesystem of a pending grow offline. Its machine must not hold it (the
    /// caller removed the machine's container): when something still does, it stays pending.
    pub(crate) fn finish_grow(&self, id: &str) -> Result<bool> {
        if !self.grow_pending(id) {
            return Ok(false);
        }
        self.unmount(id)?;
        // The loop device goes when its last user does: the machine's old container may
        // release it a moment after it exited. Waited for, bounded.
        for _ in 0..100 {
            if self.loop_of(id).is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if let Some(dev) = self.loop_of(id) {
            eprintln!(
                "hangar-agent: volume {id}: {dev} is still in use; the filesystem grows at a later start"
            );
            return Ok(false);
        }
        let image = self.image(id);
        let size = std::fs::metadata(&image)
            .map_err(io_err("reading", &image))?
            .len();
        self.grow_image(&image, size)?;
        let _ = std::fs::remove_file(self.vol(id).join(GROW_PENDING));
        Ok(true)
    }

    /// Copies the image (frozen while copied if mounted) into the snapshot directory; then
    /// [`Disks::archive`] compresses it without holding the volume.
    pub(crate) fn snapshot_copy(&self, id: &str, snapshot: &str) -> Result<PathBuf> {
        let dir = self.vol(id).join(SNAPSHOTS);
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        // Leftovers of interrupted snapshots (only one runs per volume at a time).
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let copy = dir.join(format!("{snapshot}.img.tmp"));
        if let Err(e) = self.copy_image(id, &copy) {
            let _ = std::fs::remove_file(&copy);
            return Err(e);
        }
        Ok(copy)
    }

    /// Turns a copy made by [`Disks::snapshot_copy`] into the snapshot's archive.
    pub(crate) fn archive(&self, id: &str, snapshot: &str, copy: &Path) -> Result<Archived> {
        let out = self.snapshot_path(id, snapshot);
        let tmp = out.with_extension("gz.tmp");
        let result = (|| {
            let f = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
            let hashing = Hashing {
                inner: io::BufWriter::new(f),
                hash: Sha256::new(),
                bytes: 0,
            };
            let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::fast());
            let mut tar = tar::Builder::new(gz);
            tar.sparse(true);
            tar.append_path_with_name(copy, ARCHIVE_ENTRY)
                .map_err(io_err("archiving", copy))?;
            let gz = tar.into_inner().map_err(io_err("writing", &tmp))?;
            let mut hashing = gz.finish().map_err(io_err("writing", &tmp))?;
            hashing.flush().map_err(io_err("writing", &tmp))?;
            let f = hashing
                .inner
                .into_inner()
                .map_err(|e| DiskError(format!("writing {}: {}", tmp.display(), e.error())))?;
            f.sync_all().map_err(io_err("syncing", &tmp))?;
            let digest: String = hashing
                .hash
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(Archived {
                size: hashing.bytes,
                digest: format!("sha256:{digest}"),
            })
        })();
        let _ = std::fs::remove_file(copy);
        match result {
            Ok(a) => {
                std::fs::rename(&tmp, &out).map_err(io_err("renaming", &tmp))?;
                Ok(a)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Removes a snapshot's archive (idempotent).
    pub(crate) fn remove_snapshot(&self, id: &str, snapshot: &str) {
        let _ = std::fs::remove_file(self.snapshot_path(id, snapshot));
    }

    /// The snapshots of volume `id` that have an archive on this host.
    pub(crate) fn snapshot_files(&self, id: &str) -> Vec<String> {
        std::fs::read_dir(self.vol(id).join(SNAPSHOTS))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".tar.gz"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes everything of a volume from the host (idempotent).
    pub(crate) fn destroy(&self, id: &str) -> Result<()> {
        let vol = self.vol(id);
        self.unmount(id)?;
        if mounts().iter().any(|(p, _)| p.starts_with(&vol)) {
            return Err(DiskError(format!(
                "{} is still mounted; not removing it",
                vol.display()
            )));
        }
        match std::fs::remove_dir_all(&vol) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DiskError(format!("removing {}: {e}", vol.display()))),
        }
    }

    /// The volume ids that have something on this host: a directory, a mount or a loop
    /// device under the volumes directory.
    pub(crate) fn present(&self) -> HashSet<String> {
        let mut ids = HashSet::new();
        let id_of = |p: &Path| -> Option<String> {
            let rest = p.strip_prefix(&self.dir).ok()?;
            let first = rest.components().next()?;
            Some(first.as_os_str().to_string_lossy().into_owned())
        };
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            ids.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        ids.extend(mounts().iter().filter_map(|(p, _)| id_of(p)));
        ids.extend(loop_devices().iter().filter_map(|(_, b)| id_of(b)));
        ids.retain(|id| hangar_domain::VolumeId::parse(id).is_ok());
        ids
    }

    /// Thaws a volume's filesystem if a crash left it frozen (errors ignored).
    pub(crate) fn thaw(&self, id: &str) {
        if self.is_mounted(id) {
            let _ = run("fsfreeze", args!["--unfreeze", &self.mount_point(id)]);
        }
    }
}

/// Unmounts every volume mounted under `dir` and detaches their loop devices (cleanup of a
/// data dir that is going away: test clusters, uninstall). Machines using them must be gone.
pub fn release_volumes(dir: &Path) {
    let disks = Disks::new(dir.to_path_buf());
    for id in disks.present() {
        disks.thaw(&id);
        if let Err(e) = disks.unmount(&id) {
            eprintln!("hangar-agent: releasing volume {id}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    43 27 7:0 / /var/lib/hangar/volumes/vol_x/mnt rw,relatime shared:5 - ext4 /dev/loop0 rw\n\
                    44 27 7:1 / /data/my\\040dir/mnt rw - ext4 /dev/loop1 rw\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(
            m,
            vec![
                (PathBuf::from("/mnt/parent"), "/dev/root".to_string()),
                (
                    PathBuf::from("/var/lib/hangar/volumes/vol_x/mnt"),
                    "/dev/loop0".to_string()
                ),
                (PathBuf::from("/data/my dir/mnt"), "/dev/loop1".to_string()),
            ]
        );
    }

    #[test]
    fn layout() {
        let d = Disks::new(PathBuf::from("/d/volumes"));
        assert_eq!(
            d.mount_point("vol_a"),
            PathBuf::from("/d/volumes/vol_a/mnt")
        );
        assert_eq!(
            d.snapshot_path("vol_a", "vs_b"),
            PathBuf::from("/d/volumes/vol_a/snapshots/vs_b.tar.gz")
        );
    }
}
