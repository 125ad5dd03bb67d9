//! The admin token, created on first start and written to `DATA/admin.token` (0600).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hangar_store::{Store, TokenScope};

/// Creates the admin token if none exists; returns the file written.
pub(crate) fn ensure_admin(store: &dyn Store, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if store.has_admin_token()? {
        return Ok(None);
    }
    let token = hangar_api::new_token();
    let path = data_dir.join("admin.token");
    let tmp = data_dir.join(".admin.token.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    store.create_token(
        &hangar_api::hash_token(&token),
        &TokenScope::Admin,
        "admin",
        now,
    )?;
    Ok(Some(path))
}
