//! `hangar deploy` and `hangar status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use hangar_client::deploy::{self, DeployError, DeployOptions, Event, Strategy};

use super::progress::{self, Spinner};

use super::ctx::{ApiArgs, block_on, table};
use super::target::AppArgs;
use crate::exit;

/// `hangar deploy` flags.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Image to run: a registry reference, or a `docker save` / OCI archive file (uploaded).
    #[arg(short = 'i', long)]
    image: Option<String>,
    /// immediate, rolling, canary or bluegreen (default: fly.toml's, else rolling).
    #[arg(long)]
    strategy: Option<String>,
    /// How long each machine may take to become healthy (Go duration, e.g. 2m).
    #[arg(long)]
    wait_timeout: Option<String>,
    /// Rolling batch: a fraction of the group (0.33) or a count (2).
    #[arg(long)]
    max_unavailable: Option<f64>,
    /// Extra environment, NAME=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Regions for new machines (comma-separated).
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Return once the machines are changed, without waiting for them.
    #[arg(long)]
    detach: bool,
    /// Two machines per group with services on a first deploy.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ha: bool,
    /// Start stopped machines after updating them.
    #[arg(long)]
    start_stopped: bool,
    /// Org for a new app.
    #[arg(short = 'o', long, default_value = "personal")]
    org: String,
}

impl DeployArgs {
    /// The deploy `hangar launch` runs: the fly.toml it wrote, the fly.toml's strategy.
    pub(crate) fn for_launch(
        config: PathBuf,
        org: String,
        ha: bool,
        image: Option<String>,
    ) -> Self {
        Self {
            app: AppArgs {
                app: None,
                config: Some(config),
            },
            image,
            strategy: None,
            wait_timeout: None,
            max_unavailable: None,
            env: Vec::new(),
            regions: Vec::new(),
            detach: false,
            ha,
            start_stopped: false,
            org,
        }
    }
}

fn duration(s: &str) -> anyhow::Result<Duration> {
    hangar_api_types::Duration::parse_go(s)
        .ok()
        .and_then(|d| d.to_std())
        .with_context(|| format!("'{s}' is not a duration (e.g. 90s, 2m)"))
}

/// Finds a container builder on this machine.
fn builder() -> Option<&'static str> {
    ["buildah", "podman", "docker"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Builds `dockerfile` in `dir` with whatever builder exists, saved as an archive.
fn build_image(dir: &Path, dockerfile: &Path, tag: &str, out: &Path) -> anyhow::Result<()> {
    let Some(b) = builder() else {
        bail!(
            "fly.toml builds from {}, but no image builder was found: install buildah, podman or \
             docker, or pass --image with a registry reference or an image archive",
            dockerfile.display()
        );
    };
    eprintln!("==> Building {tag} with {b}");
    let status = std::process::Command::new(b)
        .args(["build", "-f"])
        .arg(dockerfile)
        .args(["-t", tag])
        .arg(dir)
        .status()
        .with_context(|| format!("running {b}"))?;
    if !status.success() {
        bail!("{b} build failed ({status})");
    }
    let status = match b {
        "docker" => std::process::Command::new(b)
            .args(["save", "-o"])
            .arg(out)
            .arg(tag)
            .status(),
        _ => std::process::Command::new(b)
            .args(["push", tag])
            .arg(format!("oci-archive:{}", out.display()))
            .status(),
    }
    .with_context(|| format!("saving the image with {b}"))?;
    if !status.success() {
        bail!("{b} could not save the image ({status})");
    }
    Ok(())
}

pub(crate) fn run(a: DeployArgs, api: &ApiArgs) -> anyhow::Result<u8> {
    let path = a
        .app
        .manifest_path()
        .context("no fly.toml here: pass -c PATH (or run in the app's directory)")?;
    let manifest =
        hangar_manifest::load(&path).with_context(|| format!("reading {}", path.display()))?;
    let report = manifest.validate(hangar_manifest::ValidateOptions::default());
    let errors: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == hangar_manifest::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        eprintln!("{}", errors.join("\n"));
        eprintln!(
            "Error: {} is not valid (see `hangar config validate`)",
            path.display()
        );
        return Ok(exit::INVALID);
    }
    let config = manifest.config;
    let app = a.app.name()?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let strategy: Strategy = a
        .strategy
        .clone()
        .unwrap_or_else(|| config.strategy().to_string())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let deploy_cfg = config.deploy.clone().unwrap_or_default();
    let wait_timeout = match (
        &a.wait_timeout,
        deploy_cfg.wait_timeout.and_then(|d| d.to_std()),
    ) {
        (Some(s), _) => duration(s)?,
        (None, Some(d)) => d,
        (None, None) => Duration::from_secs(300),
    };
    let mut env = BTreeMap::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv}: expected NAME=VALUE");
        };
        env.insert(k.to_string(), v.to_string());
    }
    let client = api.client()?;
    let tag = format!(
        "deployment-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    block_on(async move {
        // The image: a reference, an archive to upload, or a Dockerfile to build.
        let archive: Option<PathBuf> = match &a.image {
            Some(i) if Path::new(i).is_file() => Some(PathBuf::from(i)),
            Some(_) => None,
            None => {
                let build = config.build.clone().unwrap_or_default();
                if build.image.is_some() {
                    None
                } else {
                    let dockerfile = build
                        .dockerfile
                        .map(|d| dir.join(d))
                        .unwrap_or_else(|| dir.join("Dockerfile"));
                    if !dockerfile.is_file() {
                        bail!(
                            "no image to deploy: pass --image (a registry reference or an image \
                             archive), or set [build] image or [build] dockerfile in fly.toml"
                        );
                    }
                    let out = std::env::temp_dir()
                        .join(format!("hangar-build-{}.tar", std::process::id()));
                    build_image(&dir, &dockerfile, &format!("{app}:{tag}"), &out)?;
                    Some(out)
                }
            }
        };
        // An upload needs the app; otherwise the deploy itself creates it when missing.
        if archive.is_some() && client.app(&app).await?.is_none() {
            eprintln!("==> Creating app {app}");
            client.create_app(&app, &a.org, None).await?;
        }
        let image = match (&archive, &a.image) {
            (Some(file), _) => {
                eprintln!("==> Uploading {}", file.display());
                let spinner = std::sync::Arc::new(Spinner::start("uploading"));
                let s = spinner.clone();
                client
                    .upload_image_with_progress(&app, &tag, file, move |sent, total| {
                        s.set(&format!("uploading {}", progress::bytes(sent, total)));
                    })
                    .await?
            }
            (None, Some(i)) => i.clone(),
            (None, None) => config
                .build
                .as_ref()
                .and_then(|b| b.image.clone())
                .unwrap_or_default(),
        };
        let opts = DeployOptions {
            app: app.clone(),
            org: a.org.clone(),
            image,
            strategy,
            max_unavailable: a
                .max_unavailable
                .or(deploy_cfg.max_unavailable)
                .unwrap_or(0.33),
            wait_timeout,
            env,
            regions: a.regions.clone(),
            ha: a.ha,
            start_stopped: a.start_stopped,
            detach: a.detach,
            min_secrets_version: None,
        };
        let read = |p: &str| std::fs::read(dir.join(p)).map_err(|e| e.to_string());
        let groups = deploy::group_configs(&config, &opts, Some(&read))?;
        eprintln!("==> Deploying {app} ({})", opts.image);
        // On a terminal a spinner under the last line says what is being waited for.
        let spinner = Spinner::start("deploying");
        let mut show = |e: Event| match e {
            Event::Step(s) => spinner.line(&format!("--> {s}"), Some(&s)),
            Event::Machine { id, what } => spinner.line(
                &format!("    machine {id} {what}"),
                Some(&format!("machine {id} {what}")),
            ),
            Event::ReleaseOutput(l) => spinner.line(&format!("    | {l}"), None),
        };
        let outcome = deploy::deploy(&client, &config, groups, &opts, &mut show).await;
        drop(spinner);
        match outcome {
            Ok(_) => {
                let domain = std::env::var("HANGAR_DOMAIN").unwrap_or_else(|_| "localhost".into());
                println!("Visit your newly deployed app at http://{app}.{domain}/");
                Ok(exit::OK)
            }
            Err(DeployError::ReleaseCommand { code, output }) => {
                for l in output.lines() {
                    eprintln!("    | {l}");
                }
                eprintln!(
                    "Error: release command failed with exit code {code}; no machine was changed"
                );
                Ok(exit::INVALID)
            }
            Err(e @ DeployError::Unhealthy { .. }) => {
                eprintln!("Error: {e}");
                eprintln!("Look at the machine's output with `hangar logs -a {app}`.");
                Ok(exit::INVALID)
            }
            Err(e) => Err(e.into()),
        }
    })?
}

/// `hangar status` flags.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Print JSON.
    #[arg(long, short = 'j')]
    json: bool,
    /// Refresh every 2 s until interrupted.
    #[arg(long)]
    watch: bool,
}

pub(crate) fn status(a: StatusArgs, api: &ApiArgs) -> anyhow::Result<u8> {
    let app = a.app.name()?;
    let client = api.client()?;
    block_on(async move {
        loop {
            let info = client
                .app(&app)
                .await?
                .with_context(|| format!("app {app} not found"))?;
            let ms = client.machines(&app).await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"app": info, "machines": ms})
                    )?
                );
            } else {
                if a.watch {
                    print!("\x1b[2J\x1b[H");
                }
                println!("App");
                println!("  Name     = {}", info.name);
                println!(
                    "  Owner    = {}",
                    info.organization
                        .as_ref()
                        .map(|o| o.slug.clone())
                        .unwrap_or_default()
                );
                println!(
                    "  Hostname = {app}.{}",
                    std::env::var("HANGAR_DOMAIN").unwrap_or_else(|_| "localhost".into())
                );
                println!();
                let rows: Vec<Vec<String>> = ms
                    .iter()
                    .map(|m| {
                        let checks = if m.checks.is_empty() {
                            String::new()
                        } else {
                            let ok = m
                                .checks
                                .iter()
                                .filter(|c| c.status.as_str() == "passing")
                                .count();
                            format!("{ok} total, {ok} passing").replace(
                                &format!("{ok} total"),
                                &format!("{} total", m.checks.len()),
                            )
                        };
                        vec![
                            m.config
                                .as_ref()
                                .and_then(|c| c.metadata.get("fly_process_group").cloned())
                                .unwrap_or_default(),
                            m.id.clone(),
                            m.instance_id
                                .chars()
                                .rev()
                                .take(6)
                                .collect::<String>()
                                .chars()
                                .rev()
                                .collect(),
                            m.region.clone(),
                            m.state.as_str().to_string(),
                            checks,
                            m.updated_at.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "PROCESS",
                            "ID",
                            "VERSION",
                            "REGION",
                            "STATE",
                            "CHECKS",
                            "LAST UPDATED"
                        ],
                        &rows
                    )
                );
            }
            if !a.watch {
                return Ok(exit::OK);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })?
}
