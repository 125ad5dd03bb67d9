//! Disk usage of a directory tree, for benchmarks ("disk used per extra machine") and GC
//! reports: allocated blocks and apparent size, each inode counted once (hard links),
//! symlinks not followed, other filesystems (mounts inside the tree) not entered.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a tree occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of allocated blocks (`st_blocks × 512`), what `du` reports.
    pub bytes: u64,
    /// Sum of file sizes (`st_size`), what `du --apparent-size` reports.
    pub apparent_bytes: u64,
    /// Inodes (files, directories, symlinks, whiteouts), each counted once.
    pub inodes: u64,
}

impl std::ops::Add for DiskUsage {
    type Output = Self;

    fn add(self, rhs: Self) -> Self {
        Self {
            bytes: self.bytes + rhs.bytes,
            apparent_bytes: self.apparent_bytes + rhs.apparent_bytes,
            inodes: self.inodes + rhs.inodes,
        }
    }
}

/// Measures `path` (a file or a directory tree). A missing path measures zero.
pub fn disk_usage(path: &Path) -> io::Result<DiskUsage> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DiskUsage::default()),
        Err(e) => return Err(e),
    };
    let mut seen = HashSet::new();
    let mut total = DiskUsage::default();
    let dev = meta.dev();
    let mut stack = vec![(path.to_path_buf(), meta)];
    while let Some((p, m)) = stack.pop() {
        if seen.insert((m.dev(), m.ino())) {
            total.bytes += m.blocks() * 512;
            total.apparent_bytes += m.size();
            total.inodes += 1;
        }
        if m.is_dir() && m.dev() == dev {
            let entries = match fs::read_dir(&p) {
                Ok(e) => e,
                // Removed while we looked (GC, unmount): count what is left.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                match entry.metadata() {
                    Ok(m) if m.dev() == dev => stack.push((entry.path(), m)),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(total)
}
