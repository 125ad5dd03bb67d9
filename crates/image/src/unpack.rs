//! Safe unpacking of one layer tar into a private directory.
//!
//! Every path of the tar is resolved *inside* the layer directory with `openat2(2)` and
//! `RESOLVE_IN_ROOT` (Linux ≥ 5.6): symlinks met on the way — absolute or full of `..` — are
//! interpreted as if the layer directory were `/`, the way they will be inside the machine, so
//! no entry can reach the host. On top of that:
//!
//! - absolute entry paths are taken relative to the layer root (what `tar` and docker do);
//! - an entry path or hardlink target whose `..` climbs above the root is refused
//!   ([`Error::UnsafeEntry`]), which fails the layer;
//! - the final component is always created with `O_EXCL`/`O_NOFOLLOW` semantics (an existing
//!   file or symlink is unlinked first, never written through);
//! - hardlink targets are resolved in the root and the link never follows a final symlink;
//! - character and block devices are skipped (machines get `/dev` from the runtime); FIFOs
//!   are kept;
//! - extended attributes from PAX headers are kept only for `user.*` and
//!   `security.capability`: `trusted.*` (overlayfs' own namespace) is never taken from a layer.
//!
//! OCI whiteouts become what overlayfs understands in a lower layer: `.wh.<name>` → a
//! character device 0:0 named `<name>`; `.wh..wh..opq` → `trusted.overlay.opaque=y` on the
//! directory. Other `.wh..wh.*` markers (aufs bookkeeping) are dropped.
//!
//! Ownership (uid/gid, PAX overrides included), modes (setuid bits included) and mtimes are
//! applied as in the tar; directories get theirs after all entries so adding children does not
//! disturb them.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// The overlayfs xattr that makes a directory hide the layers below it.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// What an unpack did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hard links.
    pub hardlinks: u64,
    /// Whiteouts (`.wh.<name>`).
    pub whiteouts: u64,
    /// Opaque directory markers.
    pub opaques: u64,
    /// Entries skipped (device nodes, unknown types, aufs markers).
    pub skipped: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Which decompression a blob needs, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn sniff(head: &[u8]) -> Self {
        match head {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            _ => Self::None,
        }
    }
}

/// Opens a layer blob and returns a reader of the uncompressed tar.
pub(crate) fn open_decompressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut file = File::open(path).ctx("open blob", path)?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).ctx("read blob", path)?;
    let head = &head[..n];
    let chained = io::Cursor::new(head.to_vec()).chain(file);
    match Compression::sniff(head) {
        Compression::None => Ok(Box::new(io::BufReader::with_capacity(256 * 1024, chained))),
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(256 * 1024, chained),
        ))),
        Compression::Zstd => Err(Error::Unsupported(format!(
            "zstd-compressed layer {} (re-push the image with gzip layers)",
            path.display()
        ))),
    }
}

pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Unpacks the tar stream `tar` into `dest` (an existing, empty, private directory).
pub fn unpack_layer(tar: impl Read, dest: &Path) -> Result<UnpackStats> {
    let dest = &std::fs::canonicalize(dest).ctx("resolve", dest)?;
    let root = rustix::fs::open(
        dest,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open layer dir", dest)?;
    let mut unpacker = Unpacker {
        root,
        dest: dest.to_path_buf(),
        dirs: Vec::new(),
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().ctx("read layer tar", dest)? {
        let mut entry = entry.ctx("read layer tar entry", dest)?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish_dirs()?;
    Ok(unpacker.stats)
}

#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    dest: PathBuf,
    /// Directories whose metadata is applied at the end (relative path, metadata).
    dirs: Vec<(Vec<u8>, Meta)>,
    stats: UnpackStats,
}

/// Splits a tar path into components relative to the root; `None` when `..` climbs out.
fn components(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            other => out.push(other),
        }
    }
    Some(out)
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    if parts.is_empty() {
        return b".".to_vec();
    }
    parts.join(&b'/')
}

fn os(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(512).collect()
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let Some(parts) = components(&raw_path) else {
            return Err(Error::UnsafeEntry {
                path: lossy(&raw_path),
                reason: "path climbs above the layer root with '..'",
            });
        };
        let meta = self.meta(entry, &raw_path)?;
        let kind = entry.header().entry_type();
        let Some((name, parent)) = parts.split_last() else {
            // The root itself ("./"): only its metadata matters.
            if kind.is_dir() {
                self.dirs.push((Vec::new(), meta));
            }
            return Ok(());
        };
        let name: &[u8] = name;

        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&raw_path, parent, name, hidden);
        }

        match kind {
            tar::EntryType::Directory => {
                let parent_fd = self.dir_creating(&raw_path, parent)?;
                match statat_nofollow(&parent_fd, name) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        self.remove_existing(&parent_fd, name)?;
                        mkdir(&parent_fd, name, &self.dest, &raw_path)?;
                    }
                    Err(Errno::NOENT) => mkdir(&parent_fd, name, &self.dest, &raw_path)?,
                    Err(e) => {
                        return Err(Error::io("stat", self.dest.join(os(&raw_path)), e.into()));
                    }
                }
                let mut rel = parent.to_vec();
                rel.push(name);
                self.dirs.push((join(&rel), meta));
                self.stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let parent_fd = self.dir_creating(&raw_path, parent)?;
                self.remove_existing(&parent_fd, name)?;
                let fd = rustix::fs::openat(
                    &parent_fd,
                    os(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .ctx("create", self.dest.join(os(&raw_path)))?;
                let mut file = File::from(fd);
                let n = io::copy(entry, &mut file).ctx("write", self.dest.join(os(&raw_path)))?;
                self.stats.bytes += n;
                apply_fd_meta(&file, &meta)
                    .ctx("set metadata of", self.dest.join(os(&raw_path)))?;
                self.stats.files += 1;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(Error::UnsafeEntry {
                        path: lossy(&raw_path),
                        reason: "symlink without a target",
                    });
                }
                let parent_fd = self.dir_creating(&raw_path, parent)?;
                self.remove_existing(&parent_fd, name)?;
                rustix::fs::symlinkat(os(&target), &parent_fd, os(name))
                    .ctx("symlink", self.dest.join(os(&raw_path)))?;
                rustix::fs::chownat(
                    &parent_fd,
                    os(name),
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .ctx("chown", self.dest.join(os(&raw_path)))?;
                rustix::fs::utimensat(
                    &parent_fd,
                    os(name),
                    &timestamps(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .ctx("set times of", self.dest.join(os(&raw_path)))?;
                self.stats.symlinks += 1;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let Some(target_parts) = components(&target) else {
                    return Err(Error::UnsafeEntry {
                        path: lossy(&raw_path),
                        reason: "hardlink target climbs above the layer root with '..'",
                    });
                };
                let Some((target_name, target_parent)) = target_parts.split_last() else {
                    return Err(Error::UnsafeEntry {
                        path: lossy(&raw_path),
                        reason: "hardlink to the layer root",
                    });
                };
                if target_parts == parts {
                    self.stats.skipped += 1;
                    return Ok(());
                }
                let target_parent_fd = self.dir_existing(&target, target_parent)?;
                let parent_fd = self.dir_creating(&raw_path, parent)?;
                self.remove_existing(&parent_fd, name)?;
                rustix::fs::linkat(
                    &target_parent_fd,
                    os(target_name),
                    &parent_fd,
                    os(name),
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    Error::InvalidArchive(format!(
                        "hardlink {} -> {}: {}",
                        lossy(&raw_path),
                        lossy(&target),
                        io::Error::from(e)
                    ))
                })?;
                self.stats.hardlinks += 1;
            }
            tar::EntryType::Fifo => {
                let parent_fd = self.dir_creating(&raw_path, parent)?;
                self.remove_existing(&parent_fd, name)?;
                rustix::fs::mknodat(
                    &parent_fd,
                    os(name),
                    FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .ctx("mkfifo", self.dest.join(os(&raw_path)))?;
                rustix::fs::chownat(
                    &parent_fd,
                    os(name),
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .ctx("chown", self.dest.join(os(&raw_path)))?;
                rustix::fs::chmodat(
                    &parent_fd,
                    os(name),
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .ctx("chmod", self.dest.join(os(&raw_path)))?;
                self.stats.files += 1;
            }
            // Device nodes: machines get /dev from the runtime. Everything else
            // (global PAX headers, unknown vendor types) carries no file.
            _ => self.stats.skipped += 1,
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        raw_path: &[u8],
        parent: &[&[u8]],
        name: &[u8],
        hidden: &[u8],
    ) -> Result<()> {
        if name == OPAQUE_MARKER.as_bytes() {
            self.dir_creating(raw_path, parent)?;
            let dir = rustix::fs::openat2(
                &self.root,
                os(&join(parent)),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .ctx("open", self.dest.join(os(raw_path)))?;
            rustix::fs::fsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty()).ctx(
                "set trusted.overlay.opaque on",
                self.dest.join(os(&join(parent))),
            )?;
            self.stats.opaques += 1;
            return Ok(());
        }
        if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // `.wh..wh.plnk` and friends: aufs bookkeeping, not content.
            self.stats.skipped += 1;
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(Error::UnsafeEntry {
                path: lossy(raw_path),
                reason: "whiteout of an invalid name",
            });
        }
        let parent_fd = self.dir_creating(raw_path, parent)?;
        self.remove_existing(&parent_fd, hidden)?;
        rustix::fs::mknodat(
            &parent_fd,
            os(hidden),
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .ctx("create whiteout", self.dest.join(os(raw_path)))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, raw_path: &[u8]) -> Result<Meta> {
        let header = entry.header();
        let bad = |reason| Error::UnsafeEntry {
            path: lossy(raw_path),
            reason,
        };
        let mode = header.mode().map_err(|_| bad("unreadable mode"))? & 0o7777;
        let mut uid = header.uid().map_err(|_| bad("unreadable uid"))?;
        let mut gid = header.gid().map_err(|_| bad("unreadable gid"))?;
        let mut mtime = header.mtime().unwrap_or(0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|_| bad("unreadable PAX header"))?
        {
            for ext in pax {
                let ext = ext.map_err(|_| bad("unreadable PAX header"))?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                match key {
                    "uid" => uid = number().ok_or_else(|| bad("bad PAX uid"))?,
                    "gid" => gid = number().ok_or_else(|| bad("bad PAX gid"))?,
                    "mtime" => mtime = number().unwrap_or(mtime),
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                            && (name.starts_with("user.") || name == "security.capability")
                        {
                            xattrs.push((name.to_owned(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let uid = u32::try_from(uid).map_err(|_| bad("uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| bad("gid out of range"))?;
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime: i64::try_from(mtime).unwrap_or(0),
            xattrs,
        })
    }

    /// Opens the directory `parts` (resolved in the root), creating missing components.
    fn dir_creating(&self, raw_path: &[u8], parts: &[&[u8]]) -> Result<OwnedFd> {
        match self.open_dir(parts) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.resolve_error(raw_path, e)),
        }
        let mut current = self
            .open_dir(&[])
            .map_err(|e| self.resolve_error(raw_path, e))?;
        for i in 0..parts.len() {
            match self.open_dir(&parts[..=i]) {
                Ok(fd) => current = fd,
                Err(Errno::NOENT) => {
                    mkdir(&current, parts[i], &self.dest, raw_path)?;
                    current = self
                        .open_dir(&parts[..=i])
                        .map_err(|e| self.resolve_error(raw_path, e))?;
                }
                Err(e) => return Err(self.resolve_error(raw_path, e)),
            }
        }
        Ok(current)
    }

    /// Opens the existing directory `parts` (resolved in the root).
    fn dir_existing(&self, raw_path: &[u8], parts: &[&[u8]]) -> Result<OwnedFd> {
        self.open_dir(parts).map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => Error::InvalidArchive(format!(
                "hardlink target {} does not exist in the layer",
                lossy(raw_path)
            )),
            e => self.resolve_error(raw_path, e),
        })
    }

    fn open_dir(&self, parts: &[&[u8]]) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat2(
            &self.root,
            os(&join(parts)),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    }

    fn resolve_error(&self, raw_path: &[u8], e: Errno) -> Error {
        match e {
            Errno::XDEV | Errno::LOOP => Error::UnsafeEntry {
                path: lossy(raw_path),
                reason: "path resolves through a symlink loop or out of the layer",
            },
            Errno::NOTDIR => Error::InvalidArchive(format!(
                "{}: a parent component is not a directory",
                lossy(raw_path)
            )),
            Errno::EXIST | Errno::NOENT => Error::InvalidArchive(format!(
                "{}: a parent component is a dangling symlink",
                lossy(raw_path)
            )),
            Errno::NOSYS => Error::Unsupported(
                "openat2(2) is not available (Linux ≥ 5.6 is required to unpack layers safely)"
                    .to_owned(),
            ),
            e => Error::io("resolve", self.dest.join(os(raw_path)), e.into()),
        }
    }

    /// Removes whatever is at `name` in `parent` (file, symlink, or directory tree).
    fn remove_existing(&self, parent: &OwnedFd, name: &[u8]) -> Result<()> {
        match rustix::fs::unlinkat(parent, os(name), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) | Err(Errno::PERM) => {
                // A directory: remove the tree through the real path of the (private) parent.
                let path = std::fs::read_link(fd_path(parent))
                    .ctx("resolve", &self.dest)?
                    .join(os(name));
                if !path.starts_with(&self.dest) {
                    return Err(Error::UnsafeEntry {
                        path: path.display().to_string(),
                        reason: "replacing a directory outside the layer",
                    });
                }
                std::fs::remove_dir_all(&path).ctx("remove", &path)
            }
            Err(e) => Err(Error::io("remove", self.dest.join(os(name)), e.into())),
        }
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // Children before parents, so a parent's mtime is set last.
        for (rel, meta) in self.dirs.iter().rev() {
            let path = self.dest.join(os(rel));
            let fd = rustix::fs::openat2(
                &self.root,
                os(rel),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            );
            let fd = match fd {
                Ok(fd) => fd,
                // Replaced by a later entry (a file where a directory was): nothing to do.
                Err(Errno::NOENT | Errno::NOTDIR) => continue,
                Err(e) => return Err(self.resolve_error(rel, e)),
            };
            apply_fd_meta(&File::from(fd), meta).ctx("set metadata of", &path)?;
        }
        Ok(())
    }
}

fn statat_nofollow(parent: &OwnedFd, name: &[u8]) -> rustix::io::Result<rustix::fs::Stat> {
    rustix::fs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW)
}

fn mkdir(parent: &OwnedFd, name: &[u8], dest: &Path, raw_path: &[u8]) -> Result<()> {
    match rustix::fs::mkdirat(parent, os(name), Mode::from_raw_mode(0o755)) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(Error::InvalidArchive(format!(
            "{}: cannot create directory {} (a dangling symlink is in the way)",
            lossy(raw_path),
            lossy(name)
        ))),
        Err(e) => Err(Error::io("mkdir", dest.join(os(raw_path)), e.into())),
    }
}

fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// chown, then chmod (chown clears setuid bits), then xattrs (chown clears file
/// capabilities), then times.
fn apply_fd_meta(file: &File, meta: &Meta) -> io::Result<()> {
    let fd = file.as_fd();
    rustix::fs::fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
    for (name, value) in &meta.xattrs {
        match rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            // A filesystem without user xattrs: the content is still right.
            Err(Errno::NOTSUP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::futimens(fd, &timestamps(meta.mtime))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_normalise_and_refuse_escapes() {
        let c = |s: &str| components(s.as_bytes()).map(|v| join(&v));
        assert_eq!(c("/etc/passwd"), Some(b"etc/passwd".to_vec()));
        assert_eq!(c("./a//b/./c"), Some(b"a/b/c".to_vec()));
        assert_eq!(c("a/../b"), Some(b"b".to_vec()));
        assert_eq!(c("./"), Some(b".".to_vec()));
        assert_eq!(c("../etc/passwd"), None);
        assert_eq!(c("a/../../b"), None);
        assert_eq!(c("/.."), None);
    }

    #[test]
    fn sniff() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"usta"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }
}
