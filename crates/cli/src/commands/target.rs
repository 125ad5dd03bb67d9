//! Which app a command is about: `-a`, else the `app` of the fly.toml (`-c`, or the current
//! directory's).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

/// `-a/--app` and `-c/--config`, as the reference CLI takes them.
#[derive(Debug, Clone, Args)]
pub(crate) struct AppArgs {
    /// App name (default: `app` in fly.toml).
    #[arg(short = 'a', long = "app")]
    pub app: Option<String>,
    /// Path to the app's fly.toml (or its directory).
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl AppArgs {
    /// The fly.toml to read, if one exists.
    pub fn manifest_path(&self) -> Option<PathBuf> {
        let base = self.config.clone().unwrap_or_else(|| PathBuf::from("."));
        if base.is_file() {
            return Some(base);
        }
        ["fly.toml", "fly.json", "fly.yaml", "fly.yml"]
            .iter()
            .map(|n| base.join(n))
            .find(|p| p.is_file())
    }

    /// The app name.
    pub fn name(&self) -> anyhow::Result<String> {
        if let Some(a) = self.app.as_deref().filter(|a| !a.is_empty()) {
            return Ok(a.to_string());
        }
        let Some(path) = self.manifest_path() else {
            bail!("which app? pass -a APP, or run where a fly.toml names one (or -c PATH)");
        };
        let m =
            hangar_manifest::load(&path).with_context(|| format!("reading {}", path.display()))?;
        match m.config.app.filter(|a| !a.is_empty()) {
            Some(a) => Ok(a),
            None => bail!("{} has no `app`; pass -a APP", path.display()),
        }
    }
}
