//! What every API command needs: the API's URL and a token, from flags, the environment or
//! (on the host itself) hangard's admin token file; a runtime; tables.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use hangar_client::Client;

/// Where the API is and who we are.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    /// Machines API URL.
    #[arg(
        long,
        global = true,
        env = "HANGAR_API_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:4280"
    )]
    pub api_url: String,
    /// API token (also read from FLY_API_TOKEN; on the host itself, hangard's admin token
    /// file is used when no token is given).
    #[arg(
        short = 't',
        long = "access-token",
        global = true,
        env = "HANGAR_API_TOKEN",
        hide_env_values = true
    )]
    pub access_token: Option<String>,
}

impl ApiArgs {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = self
            .access_token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(t.trim().to_string());
        }
        if let Ok(t) = std::env::var("FLY_API_TOKEN")
            && !t.trim().is_empty()
        {
            return Ok(t.trim().to_string());
        }
        let data = std::env::var("HANGAR_DATA_DIR").unwrap_or_else(|_| "/var/lib/hangar".into());
        let file = PathBuf::from(data).join("admin.token");
        if let Ok(t) = std::fs::read_to_string(&file)
            && !t.trim().is_empty()
        {
            return Ok(t.trim().to_string());
        }
        bail!(
            "no API token: pass --access-token, set HANGAR_API_TOKEN (or FLY_API_TOKEN), or run on the \
             host as a user who can read {} (hangard writes it on first start)",
            file.display()
        )
    }

    /// A client, or an error that says what to do.
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = self.token()?;
        Client::new(&self.api_url, &token).context("setting up the API client")
    }
}

/// Runs a future on a fresh single-threaded runtime.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(f))
}

/// Asks `question` on the terminal (default no). Off a terminal it asks nothing and fails
/// with a message naming `flag`, the flag that answers yes.
pub(crate) fn confirm(question: &str, flag: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() {
        bail!("{question} — not asking without a terminal: pass {flag} to confirm");
    }
    eprint!("? {question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Left-aligned columns with a header row, two spaces apart.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table(
            &["ID", "STATE"],
            &[
                vec!["abc".into(), "started".into()],
                vec!["a".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID   STATE\nabc  started\na    x\n");
    }
}
