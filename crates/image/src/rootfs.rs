//! A root filesystem per machine: an overlayfs whose lower layers are the image's shared
//! layer directories (top first) and whose upper and work directories are the machine's own.
//!
//! ```text
//! MACHINE_DIR/
//!   rootfs/       the overlay mount point (what the runtime uses as the container root)
//!   upper/        the machine's writes (the only per-machine disk use)
//!   work/         overlayfs' work directory
//!   rootfs.json   which image is mounted (so a re-mount after a crash can be checked)
//! ```
//!
//! Mounting is idempotent: if `rootfs/` is already an overlay mount for the same image (the
//! daemon restarted while machines ran) it is reused; unmounting tolerates "not mounted".
//!
//! ## Long lowerdir lists
//!
//! `mount(2)` copies at most one page of options. [`MountStrategy::Auto`] uses, in order:
//! 1. `mount(2)` with absolute paths when the option string fits (almost every image);
//! 2. the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`) with one `lowerdir+`
//!    parameter per layer (Linux ≥ 6.8): no length limit beyond overlayfs' own 500 layers;
//! 3. on older kernels, `mount(2)` with each lower layer named `/proc/self/fd/N` of an
//!    `O_PATH` descriptor held during the call: ~20 bytes per layer, so ~190 layers fit
//!    (docker caps images at 127). `chdir` + relative paths was rejected: the working
//!    directory is process-wide and the daemon is multi-threaded.
//!
//! With strategies 1 and 3, paths must not contain `,`, `:` or `\` (overlayfs' separators);
//! such paths are refused with a clear error rather than escaped.
//!
//! ## For whoever writes into a mounted rootfs
//!
//! The merged tree is the image's: its symlinks (`/etc/hosts -> /host/etc/passwd`, …) are
//! controlled by whoever built the image. Files the host writes into it (`/etc/hosts`,
//! `/etc/resolv.conf`, `files[]`) must be resolved inside the rootfs (`openat2` with
//! `RESOLVE_IN_ROOT`, as [`crate::unpack`] does), never with plain host paths.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::store::ImageStore;
use crate::usage::{self, DiskUsage};

/// mount(2) copies at most one page of data; stay under the smallest page size.
const MOUNT_DATA_MAX: usize = 4095;
const STATE_FILE: &str = "rootfs.json";

/// How to pass the lower layers to overlayfs. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MountStrategy {
    /// Pick the first that works: legacy if it fits, then new API, then fd paths.
    #[default]
    Auto,
    /// `mount(2)` with absolute paths.
    Legacy,
    /// `fsopen`/`fsconfig(lowerdir+)`/`fsmount`/`move_mount` (Linux ≥ 6.8).
    NewApi,
    /// `mount(2)` with `/proc/self/fd/N` lower paths.
    FdPaths,
}

/// How a rootfs came to be mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MountMethod {
    /// `mount(2)` with absolute paths.
    Legacy,
    /// The new mount API with `lowerdir+`.
    NewApi,
    /// `mount(2)` with `/proc/self/fd/N` lower paths.
    FdPaths,
    /// It was already mounted (for the same image) and was reused.
    Reused,
}

/// A mounted machine rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// The mount point, `MACHINE_DIR/rootfs`.
    pub target: PathBuf,
    /// The machine's upper directory.
    pub upper: PathBuf,
    /// The overlay work directory.
    pub work: PathBuf,
    /// Lower layer directories, top first (shared with every machine of the image).
    pub lower: Vec<PathBuf>,
    /// The image's manifest digest.
    pub image: Digest,
    /// How it was mounted.
    pub method: MountMethod,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    image: Digest,
    lower: Vec<PathBuf>,
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Superblock options (for overlay: lowerdir=…,upperdir=…).
    pub super_options: String,
}

/// Parses `/proc/self/mountinfo`.
pub fn mountinfo() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: right.next()?.to_owned(),
                source: unescape(right.next()?),
                super_options: right.next().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for space, …).
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

/// Whether `path` (canonical) is a mount point in this mount namespace.
pub fn is_mounted(path: &Path) -> io::Result<bool> {
    Ok(mountinfo()?.iter().any(|m| m.mount_point == path))
}

/// Whether something is mounted on `target`: its device differs from its parent's. O(1),
/// unlike scanning mountinfo (which grows with every machine); an overlay always has a device
/// of its own, so our mounts are never missed.
fn mounted_on(target: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let dev = match fs::symlink_metadata(target) {
        Ok(m) => m.dev(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("stat", target, e)),
    };
    let parent = target.parent().unwrap_or(Path::new("/"));
    let parent_dev = fs::symlink_metadata(parent).ctx("stat", parent)?.dev();
    Ok(dev != parent_dev)
}

/// Lower directories of every overlay mounted in this namespace (as overlayfs shows them).
pub(crate) fn mounted_lowerdirs() -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for m in mountinfo().unwrap_or_default() {
        if m.fs_type != "overlay" {
            continue;
        }
        for opt in m.super_options.split(',') {
            if let Some((key, value)) = opt.split_once('=')
                && key.starts_with("lowerdir")
            {
                out.extend(value.split(':').map(|p| PathBuf::from(unescape(p))));
            }
        }
    }
    out
}

fn paths_of(machine_dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        machine_dir.join("rootfs"),
        machine_dir.join("upper"),
        machine_dir.join("work"),
        machine_dir.join(STATE_FILE),
    )
}

impl ImageStore {
    /// Mounts `image`'s rootfs for the machine whose directory is `machine_dir`.
    pub fn mount_rootfs(&self, image: &Image, machine_dir: &Path) -> Result<RootfsMount> {
        self.mount_rootfs_with(image, machine_dir, MountStrategy::Auto)
    }

    /// [`ImageStore::mount_rootfs`] with an explicit strategy (tests use it to exercise
    /// every fallback).
    pub fn mount_rootfs_with(
        &self,
        image: &Image,
        machine_dir: &Path,
        strategy: MountStrategy,
    ) -> Result<RootfsMount> {
        fs::create_dir_all(machine_dir).ctx("create", machine_dir)?;
        let machine_dir = fs::canonicalize(machine_dir).ctx("resolve", machine_dir)?;
        let (target, upper, work, state_path) = paths_of(&machine_dir);
        let mut lower: Vec<PathBuf> = image
            .lower_layers()
            .into_iter()
            .map(|d| {
                if self.has_layer(d) {
                    Ok(self.layer_path(d))
                } else {
                    Err(Error::LayerMissing(d.clone()))
                }
            })
            .collect::<Result<_>>()?;
        if lower.is_empty() {
            lower.push(self.empty_dir());
        }
        let mut mount = RootfsMount {
            target: target.clone(),
            upper: upper.clone(),
            work: work.clone(),
            lower: lower.clone(),
            image: image.digest.clone(),
            method: MountMethod::Reused,
        };

        let state: Option<State> = fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mismatch = |state: Option<State>| Error::RootfsMismatch {
            target: target.clone(),
            current: state.map_or_else(|| "unknown".to_owned(), |s| s.image.to_string()),
            wanted: image.digest.clone(),
        };
        if mounted_on(&target)? {
            return match state {
                Some(state) if state.image == image.digest => {
                    mount.lower = state.lower;
                    Ok(mount)
                }
                other => Err(mismatch(other)),
            };
        }
        // Not mounted, but the upper dir holds another image's writes: mixing them with this
        // image's layers would give a rootfs nobody built. The caller decides (remove_rootfs).
        if let Some(previous) = state
            && previous.image != image.digest
        {
            return Err(mismatch(Some(previous)));
        }

        for dir in [&target, &upper, &work] {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create", dir, e)),
            }
        }
        let state = State {
            image: image.digest.clone(),
            lower: lower.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&state)
            .map_err(|e| Error::Internal(format!("serialise rootfs state: {e}")))?;
        let tmp = machine_dir.join(format!(".{STATE_FILE}.tmp"));
        fs::write(&tmp, bytes).ctx("write", &tmp)?;
        fs::rename(&tmp, &state_path).ctx("rename into", &state_path)?;

        mount.method = match strategy {
            MountStrategy::Legacy => mount_legacy(&lower, &upper, &work, &target)?,
            MountStrategy::NewApi => mount_new_api(&lower, &upper, &work, &target)?,
            MountStrategy::FdPaths => mount_fd_paths(&lower, &upper, &work, &target)?,
            MountStrategy::Auto => match legacy_options(&lower, &upper, &work) {
                Ok(options) if options.len() <= MOUNT_DATA_MAX => {
                    do_mount(&options, &target)?;
                    MountMethod::Legacy
                }
                _ => match mount_new_api(&lower, &upper, &work, &target) {
                    Ok(m) => m,
                    // No new mount API or no `lowerdir+` (Linux < 6.8).
                    Err(Error::Mount { source, .. })
                        if matches!(
                            Errno::from_io_error(&source),
                            Some(Errno::NOSYS | Errno::INVAL | Errno::PERM)
                        ) =>
                    {
                        mount_fd_paths(&lower, &upper, &work, &target)?
                    }
                    Err(e) => return Err(e),
                },
            },
        };
        Ok(mount)
    }
}

fn check_plain(path: &Path) -> Result<&str> {
    let s = path.to_str().ok_or_else(|| {
        Error::Unsupported(format!(
            "non-UTF-8 path {} in overlay options",
            path.display()
        ))
    })?;
    if s.contains([',', ':', '\\']) {
        return Err(Error::Unsupported(format!(
            "path {s:?} contains ',', ':' or '\\', which overlayfs options cannot carry"
        )));
    }
    Ok(s)
}

fn legacy_options(lower: &[PathBuf], upper: &Path, work: &Path) -> Result<String> {
    let lower: Vec<&str> = lower
        .iter()
        .map(|p| check_plain(p))
        .collect::<Result<_>>()?;
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        check_plain(upper)?,
        check_plain(work)?
    ))
}

fn mount_error(op: &'static str, target: &Path, e: Errno) -> Error {
    let hint = match e {
        Errno::NODEV => " (the overlay filesystem is not available: modprobe overlay)",
        Errno::PERM | Errno::ACCESS => " (mounting needs root / CAP_SYS_ADMIN)",
        Errno::INVAL => {
            " (overlayfs refused the options: check the kernel log; the store and machine dirs \
             must be on a filesystem overlayfs supports, e.g. ext4 or xfs)"
        }
        Errno::BUSY => " (the upper or work directory is in use by another mount)",
        _ => "",
    };
    Error::Mount {
        op,
        target: target.to_path_buf(),
        source: e.into(),
        hint: hint.to_owned(),
    }
}

fn do_mount(options: &str, target: &Path) -> Result<()> {
    let data = std::ffi::CString::new(options)
        .map_err(|_| Error::Internal("NUL in mount options".to_owned()))?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| mount_error("mount", target, e))
}

fn mount_legacy(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<MountMethod> {
    let options = legacy_options(lower, upper, work)?;
    if options.len() > MOUNT_DATA_MAX {
        return Err(Error::Unsupported(format!(
            "overlay options are {} bytes, more than mount(2) accepts ({MOUNT_DATA_MAX})",
            options.len()
        )));
    }
    do_mount(&options, target)?;
    Ok(MountMethod::Legacy)
}

fn mount_new_api(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<MountMethod> {
    let err = |e| mount_error("mount", target, e);
    let fs_fd = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(err)?;
    for l in lower {
        rustix::mount::fsconfig_set_string(&fs_fd, "lowerdir+", l.as_path()).map_err(err)?;
    }
    rustix::mount::fsconfig_set_string(&fs_fd, "upperdir", upper).map_err(err)?;
    rustix::mount::fsconfig_set_string(&fs_fd, "workdir", work).map_err(err)?;
    rustix::mount::fsconfig_create(&fs_fd).map_err(err)?;
    let mnt = rustix::mount::fsmount(
        &fs_fd,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(err)?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(err)?;
    Ok(MountMethod::NewApi)
}

fn mount_fd_paths(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<MountMethod> {
    let fds: Vec<OwnedFd> = lower
        .iter()
        .map(|l| {
            rustix::fs::open(
                l.as_path(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx("open", l)
        })
        .collect::<Result<_>>()?;
    let lower: Vec<String> = fds
        .iter()
        .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        check_plain(upper)?,
        check_plain(work)?
    );
    if options.len() > MOUNT_DATA_MAX {
        return Err(Error::Unsupported(format!(
            "{} layers are too many for this kernel (needs Linux ≥ 6.8 for more)",
            lower.len()
        )));
    }
    do_mount(&options, target)?;
    drop(fds);
    Ok(MountMethod::FdPaths)
}

/// Unmounts `MACHINE_DIR/rootfs`. Not mounted (or no such directory) is fine. A busy mount
/// is detached lazily. Returns whether anything was unmounted.
pub fn unmount_rootfs(machine_dir: &Path) -> Result<bool> {
    let machine_dir = match fs::canonicalize(machine_dir) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("resolve", machine_dir, e)),
    };
    let target = machine_dir.join("rootfs");
    let mut unmounted = false;
    // Bounded: a mount point can be stacked a few times (e.g. a crash between mount and
    // recording); each round removes one.
    for _ in 0..16 {
        if !mounted_on(&target)? {
            break;
        }
        match rustix::mount::unmount(&target, UnmountFlags::NOFOLLOW) {
            Ok(()) => unmounted = true,
            Err(Errno::INVAL | Errno::NOENT) => break,
            Err(Errno::BUSY) => {
                rustix::mount::unmount(&target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                    .map_err(|e| mount_error("unmount", &target, e))?;
                unmounted = true;
            }
            Err(e) => return Err(mount_error("unmount", &target, e)),
        }
    }
    Ok(unmounted)
}

/// Unmounts the rootfs and deletes the machine's upper, work and mount-point directories
/// and its state file (the machine directory itself stays).
pub fn remove_rootfs(machine_dir: &Path) -> Result<()> {
    unmount_rootfs(machine_dir)?;
    let (target, upper, work, state) = paths_of(machine_dir);
    for dir in [&upper, &work] {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", dir, e)),
        }
    }
    match fs::remove_dir(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &target, e)),
    }
    match fs::remove_file(&state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &state, e)),
    }
}

/// Disk used by a machine's own writes (its upper directory).
pub fn rootfs_usage(machine_dir: &Path) -> Result<DiskUsage> {
    let upper = machine_dir.join("upper");
    usage::disk_usage(&upper).ctx("measure", &upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    99 27 0:50 / /m/rootfs rw,relatime - overlay overlay rw,lowerdir=/s/layers/a:/s/layers/b,upperdir=/m/upper,workdir=/m/work\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[1].fs_type, "overlay");
        assert!(
            m[1].super_options
                .contains("lowerdir=/s/layers/a:/s/layers/b")
        );
    }

    #[test]
    fn refuses_separator_paths() {
        assert!(check_plain(Path::new("/a,b")).is_err());
        assert!(check_plain(Path::new("/a:b")).is_err());
        assert!(check_plain(Path::new("/a/b")).is_ok());
    }
}
