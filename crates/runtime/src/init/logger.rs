//! A size-bounded log file: when a write would take it past the limit, `FILE` becomes
//! `FILE.1` (replacing the previous one) and a new `FILE` is started. At most two files of
//! `limit` bytes exist per stream.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The rotated sibling of a log file: `FILE.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// An append-only log file that rotates at a size limit.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    limit: u64,
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, limit: u64) -> io::Result<Self> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            limit: limit.max(1),
            file,
            written,
        })
    }

    /// Writes all of `buf`, rotating whenever the next piece would not fit. A piece larger
    /// than a whole file is cut after its last newline that fits (or at the limit), so no file
    /// ever exceeds the limit.
    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let room =
                usize::try_from(self.limit.saturating_sub(self.written)).unwrap_or(usize::MAX);
            if buf.len() <= room {
                self.file.write_all(buf)?;
                self.written += buf.len() as u64;
                return Ok(());
            }
            if self.written > 0 {
                self.rotate()?;
                continue;
            }
            let cut = buf[..room]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(room, |i| i + 1);
            self.file.write_all(&buf[..cut])?;
            self.written += cut as u64;
            buf = &buf[cut..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated_path(&self.path))?;
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_limit_and_keeps_two_files() {
        let dir = std::env::temp_dir().join(format!("hangar-logger-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("out.log");
        let mut f = RotatingFile::open(&path, 10).expect("open");
        f.write(b"12345").expect("w");
        f.write(b"67890").expect("w");
        f.write(b"abc").expect("w");
        f.write(b"defghijklmnop").expect("w");
        f.write(b"q").expect("w");
        assert_eq!(fs::read(&path).expect("read"), b"nopq");
        assert_eq!(fs::read(rotated_path(&path)).expect("read"), b"defghijklm");
        // Reopening appends and counts what is there.
        let mut f = RotatingFile::open(&path, 3).expect("open");
        f.write(b"rs").expect("w");
        f.write(b"t").expect("w");
        assert_eq!(fs::read(&path).expect("read"), b"rst");
        assert_eq!(fs::read(rotated_path(&path)).expect("read"), b"nopq");
        // Lines are kept whole where they fit.
        let mut f = RotatingFile::open(&path, 8).expect("open");
        f.write(b"ab\ncd\nefghij\n").expect("w");
        assert_eq!(fs::read(&path).expect("read"), b"efghij\n");
        assert_eq!(fs::read(rotated_path(&path)).expect("read"), b"ab\ncd\n");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
