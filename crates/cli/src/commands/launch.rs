//! `hangar launch`: a new app from an image or a project with a Dockerfile. Writes a fly.toml
//! in the reference's generated shape (validated before it is written), creates the app and
//! deploys it (unless `--no-deploy`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args};
use hangar_manifest::launch::{self, LaunchPlan};

use super::ctx::{ApiArgs, block_on, confirm};
use super::deploy;
use crate::exit;

/// `hangar launch` flags.
#[derive(Debug, Args)]
pub(crate) struct LaunchArgs {
    /// The project directory: where fly.toml is written (and the Dockerfile read).
    #[arg(long, value_name = "DIR", default_value = ".")]
    path: PathBuf,
    /// Image to run: a registry reference (written to `[build] image`), or a `docker save` /
    /// OCI archive file (uploaded when deploying).
    #[arg(short = 'i', long)]
    image: Option<String>,
    /// Dockerfile to build (default: DIR/Dockerfile).
    #[arg(long, value_name = "PATH")]
    dockerfile: Option<PathBuf>,
    /// App name (default: from the directory or the image).
    #[arg(long)]
    name: Option<String>,
    /// Org to create the app in.
    #[arg(short = 'o', long, default_value = "personal")]
    org: String,
    /// Primary region (default: the platform's nearest).
    #[arg(short = 'r', long)]
    region: Option<String>,
    /// The port the app listens on (default: the Dockerfile's EXPOSE, else 8080).
    #[arg(long)]
    internal_port: Option<u16>,
    /// What the proxy does with idle machines: off, stop or suspend.
    #[arg(long, default_value = "stop", value_parser = ["off", "stop", "suspend"])]
    auto_stop: String,
    /// VM size preset (e.g. shared-cpu-2x, performance-1x).
    #[arg(long)]
    vm_size: Option<String>,
    /// VM memory (e.g. 512, 512mb, 2gb; a bare number is MB).
    #[arg(long)]
    vm_memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    vm_cpus: Option<u32>,
    /// CPU kind: shared or performance.
    #[arg(long, value_parser = ["shared", "performance"])]
    vm_cpu_kind: Option<String>,
    /// Two machines for the app's services on the first deploy.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    ha: bool,
    /// Write fly.toml and create the app, but do not deploy.
    #[arg(long)]
    no_deploy: bool,
    /// Deploy without asking.
    #[arg(long)]
    now: bool,
    /// Launch with the fly.toml already in DIR (its settings are kept; the app name is set).
    #[arg(long)]
    copy_config: bool,
    /// Ask nothing: accept the settings and deploy (needed when not on a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 UTC without fractions (`2025-01-02T03:04:05Z`).
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Validates fly.toml text with the manifest crate; the errors, one per line, if any.
fn check(text: &str, file: &str) -> Result<hangar_manifest::Manifest, String> {
    let m = hangar_manifest::parse(text, hangar_manifest::Format::Toml, file)
        .map_err(|e| e.to_string())?;
    let errors: Vec<String> = m
        .validate(hangar_manifest::ValidateOptions::default())
        .findings
        .iter()
        .filter(|f| f.severity == hangar_manifest::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    if errors.is_empty() {
        Ok(m)
    } else {
        Err(errors.join("\n"))
    }
}

/// `text` with its top-level `app` set to `name` (the first `app = …` line replaced, or one
/// added at the top).
fn with_app_name(text: &str, name: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    let mut in_table = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_table = true;
        }
        if !done && !in_table && {
            let key = t.split('=').next().unwrap_or_default().trim();
            key == "app" && t.contains('=')
        } {
            out.push_str(&format!("app = '{name}'\n"));
            done = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if done {
        out
    } else {
        format!("app = '{name}'\n{out}")
    }
}

pub(crate) fn run(a: LaunchArgs, api: &ApiArgs) -> anyhow::Result<u8> {
    use std::io::IsTerminal as _;
    if !a.yes && !std::io::stdin().is_terminal() {
        bail!(
            "hangar launch asks before it creates anything, and this is not a terminal: pass --yes \
             to accept the settings (and --no-deploy to only write fly.toml and create the app)"
        );
    }
    let dir = a.path.clone();
    if !dir.is_dir() {
        bail!("{} is not a directory (--path)", dir.display());
    }
    let fly_toml = dir.join("fly.toml");
    let existing = fly_toml.is_file();
    if existing && !a.copy_config {
        bail!(
            "{} exists already: pass --copy-config to launch with it, or move it away to have \
             a new one written",
            fly_toml.display()
        );
    }
    let archive: Option<String> = a.image.clone().filter(|i| Path::new(i).is_file());
    let (org, ha, upload) = (a.org.clone(), a.ha, archive.clone());
    let client = api.client()?;
    let deploy_now = block_on(async move {
        let archive = archive.as_deref();
        let file = fly_toml.display().to_string();
        // The fly.toml: the one there (--copy-config), or a new one.
        let (name, text, summary) = if existing {
            let old =
                std::fs::read_to_string(&fly_toml).with_context(|| format!("reading {file}"))?;
            let m = check(&old, &file).map_err(|e| {
                anyhow::anyhow!("{e}\nError: {file} is not valid (see `hangar config validate`)")
            })?;
            let name = match (&a.name, m.config.app.clone().filter(|n| !n.is_empty())) {
                (Some(n), _) => n.clone(),
                (None, Some(n)) => n,
                (None, None) => bail!("{file} has no `app`: pass --name"),
            };
            let text = if m.config.app.as_deref() == Some(name.as_str()) {
                old
            } else {
                with_app_name(&old, &name)
            };
            (name, text, format!("the settings of {file}"))
        } else {
            let dockerfile = a
                .dockerfile
                .clone()
                .unwrap_or_else(|| dir.join("Dockerfile"));
            let has_dockerfile = dockerfile.is_file();
            if a.image.is_none() && !has_dockerfile {
                bail!(
                    "nothing to launch: pass --image (a registry reference or an image archive), \
                     or run in a directory with a Dockerfile (or pass --dockerfile)"
                );
            }
            let dir_name = std::fs::canonicalize(&dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
            let name = match &a.name {
                Some(n) => n.clone(),
                None => a
                    .image
                    .as_deref()
                    .filter(|_| archive.is_none())
                    .and_then(launch::app_name_from)
                    .or_else(|| dir_name.as_deref().and_then(launch::app_name_from))
                    .context("can not make an app name from the directory or image: pass --name")?,
            };
            let regions = client.regions().await?;
            let region = match &a.region {
                Some(r) if regions.regions.iter().any(|x| x.code == *r) => r.clone(),
                Some(r) => bail!(
                    "region '{r}' is not one of the platform's: {} (see `hangar platform regions`)",
                    regions
                        .regions
                        .iter()
                        .map(|x| x.code.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => regions
                    .nearest
                    .clone()
                    .or_else(|| regions.regions.first().map(|r| r.code.clone()))
                    .unwrap_or_else(|| "local".into()),
            };
            let exposed = if a.image.is_none() && has_dockerfile {
                std::fs::read_to_string(&dockerfile)
                    .ok()
                    .and_then(|t| launch::dockerfile_port(&t))
            } else {
                None
            };
            let mut plan = LaunchPlan::new(&name, &region);
            plan.image = a.image.clone().filter(|_| archive.is_none());
            plan.dockerfile = a
                .dockerfile
                .as_ref()
                .filter(|_| a.image.is_none())
                .map(|d| {
                    d.strip_prefix(&dir)
                        .unwrap_or(d)
                        .to_string_lossy()
                        .into_owned()
                });
            plan.internal_port = a
                .internal_port
                .or(exposed)
                .unwrap_or(launch::DEFAULT_INTERNAL_PORT);
            plan.auto_stop = a.auto_stop.clone();
            plan.vm_size = a.vm_size.clone();
            plan.vm_memory = a.vm_memory.clone();
            plan.vm_cpus = a.vm_cpus;
            plan.vm_cpu_kind = a.vm_cpu_kind.clone();
            plan.generated_at = rfc3339(now_ms());
            if plan.effective_auto_stop().1 {
                eprintln!("Note: --auto-stop suspend needs less than 2 GB of memory; using stop");
            }
            let port_from = if a.internal_port.is_some() {
                "--internal-port"
            } else if exposed.is_some() {
                "the Dockerfile's EXPOSE"
            } else {
                "the default"
            };
            let source = match (&a.image, archive) {
                (_, Some(f)) => format!("image archive {f} (uploaded when deploying)"),
                (Some(i), None) => format!("image {i}"),
                (None, _) => format!("built from {}", dockerfile.display()),
            };
            let summary = format!(
                "app {name} in org {org}, region {region}, {source}, listening on port {port} ({port_from}), \
                 auto_stop_machines = {stop}, VM {vm}",
                org = a.org,
                port = plan.internal_port,
                stop = plan.effective_auto_stop().0,
                vm = match &plan.vm_size {
                    Some(s) => format!("{s} {}", plan.memory()),
                    None => format!(
                        "{} {}x {}",
                        plan.vm_cpu_kind.as_deref().unwrap_or("shared"),
                        plan.vm_cpus.unwrap_or(1),
                        plan.memory()
                    ),
                },
            );
            (name, launch::generate(&plan), summary)
        };
        // Never write (or create anything for) a fly.toml our own validation rejects.
        if let Err(e) = check(&text, &file) {
            eprintln!("{e}");
            bail!("the fly.toml these settings make is not valid; fix the flags above");
        }
        eprintln!("Launching {summary}");
        if !a.yes && !confirm("Create the app with these settings?", "--yes")? {
            bail!("nothing was created");
        }
        if client.app(&name).await?.is_some() {
            bail!(
                "an app named {name} exists already: pick another --name, or deploy to it with \
                 `hangar deploy -a {name}`"
            );
        }
        client.create_app(&name, &a.org, None).await?;
        eprintln!("Created app {name} in org {}", a.org);
        std::fs::write(&fly_toml, &text).with_context(|| format!("writing {file}"))?;
        println!("Wrote {file}");
        if let Some(f) = archive.filter(|_| !existing) {
            println!(
                "Note: an image archive is not a registry reference, so fly.toml names no image: \
                 pass --image {f} to later deploys too"
            );
        }
        if a.no_deploy {
            println!("Deploy it with `hangar deploy -c {}`", dir.display());
            return Ok(None);
        }
        if !a.yes && !a.now && !confirm("Deploy it now?", "--now")? {
            println!("Deploy it later with `hangar deploy -c {}`", dir.display());
            return Ok(None);
        }
        Ok(Some(fly_toml))
    })??;
    match deploy_now {
        // Deploying runs on a runtime of its own.
        Some(path) => deploy::run(deploy::DeployArgs::for_launch(path, org, ha, upload), api),
        None => Ok(exit::OK),
    }
}
