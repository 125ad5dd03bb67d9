//! `hangar config validate|show|machines`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use hangar_manifest::{
    ConvertOptions, Format, LoadError, Manifest, Report, ValidateOptions, load, machine_config,
    machine_configs, render,
};

use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a fly.toml the way the reference CLI does. Exit 0 valid, 1 invalid, 2 unreadable.
    Validate {
        #[command(flatten)]
        file: FileArgs,
        /// Also report unknown sections and keys as errors.
        #[arg(long)]
        strict: bool,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration normalised: legacy shapes rewritten, units made explicit.
    Show {
        #[command(flatten)]
        file: FileArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutFormat::Toml)]
        format: OutFormat,
    },
    /// Print the Machines API config each process group gets, as JSON.
    Machines {
        #[command(flatten)]
        file: FileArgs,
        /// Only this process group (prints its config alone instead of a map of groups).
        #[arg(long, short = 'g')]
        group: Option<String>,
        /// The image to put in the configs (default: `[build] image`).
        #[arg(long, short = 'i')]
        image: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct FileArgs {
    /// Path to the app's fly.toml (or .json/.yaml), or to its directory.
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Option<PathBuf>,
    /// App name; overrides `app` in the file.
    #[arg(short = 'a', long = "app")]
    app: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OutFormat {
    Toml,
    Json,
    Yaml,
}

impl From<OutFormat> for Format {
    fn from(f: OutFormat) -> Self {
        match f {
            OutFormat::Toml => Format::Toml,
            OutFormat::Json => Format::Json,
            OutFormat::Yaml => Format::Yaml,
        }
    }
}

const DEFAULT_NAMES: [&str; 4] = ["fly.toml", "fly.json", "fly.yaml", "fly.yml"];

/// `-c` as given, a directory's fly.toml, or the first `fly.*` in the working directory.
fn resolve(path: Option<&Path>) -> PathBuf {
    let dir = match path {
        Some(p) if p.is_dir() => p.to_path_buf(),
        Some(p) => return p.to_path_buf(),
        None => PathBuf::from("."),
    };
    DEFAULT_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join(DEFAULT_NAMES[0]))
}

/// Loads the manifest; `Err(code)` after printing why it can't be used.
fn open(args: &FileArgs, json: bool) -> Result<(PathBuf, Manifest), u8> {
    let path = resolve(args.config.as_deref());
    match load(&path) {
        Ok(mut m) => {
            if let Some(app) = &args.app {
                m.config.app = Some(app.clone());
            }
            Ok((path, m))
        }
        Err(LoadError::Io { path, source }) => {
            let hint = if source.kind() == std::io::ErrorKind::NotFound {
                "\n  help: run in the app's directory, or pass -c path/to/fly.toml"
            } else {
                ""
            };
            if json {
                print_json(&serde_json::json!({
                    "file": path, "valid": false, "readable": false, "error": source.to_string(),
                }));
            } else {
                eprintln!("Error: can not read {path}: {source}{hint}");
            }
            Err(exit::UNREADABLE)
        }
        Err(LoadError::Syntax(f)) => {
            if json {
                let report = Report { findings: vec![f] };
                print_report_json(&path, &report);
            } else {
                eprintln!("{f}");
                eprintln!("✘ {} is not valid", path.display());
            }
            Err(exit::INVALID)
        }
    }
}

fn print_json(v: &serde_json::Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn print_report_json(path: &Path, report: &Report) {
    print_json(&serde_json::json!({
        "file": path.display().to_string(),
        "valid": report.is_valid(),
        "errors": report.errors().count(),
        "warnings": report.warnings().count(),
        "findings": report.findings,
    }));
}

pub(crate) fn run(cmd: ConfigCommand) -> anyhow::Result<u8> {
    match cmd {
        ConfigCommand::Validate { file, strict, json } => {
            let (path, m) = match open(&file, json) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let report = m.validate(ValidateOptions { strict });
            if json {
                print_report_json(&path, &report);
            } else {
                let mut err = std::io::stderr().lock();
                writeln!(err, "Validating {}", path.display())?;
                for f in &report.findings {
                    writeln!(err, "{f}")?;
                }
                let (e, w) = (report.errors().count(), report.warnings().count());
                if report.is_valid() {
                    writeln!(err, "✓ Configuration is valid ({w} warning{})", plural(w))?;
                } else {
                    writeln!(
                        err,
                        "✘ Configuration is not valid: {e} error{}, {w} warning{}",
                        plural(e),
                        plural(w)
                    )?;
                }
            }
            Ok(if report.is_valid() {
                exit::OK
            } else {
                exit::INVALID
            })
        }
        ConfigCommand::Show { file, format } => {
            let (_, m) = match open(&file, false) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let text = render::render(&m.config, format.into())?;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(exit::OK)
        }
        ConfigCommand::Machines { file, group, image } => {
            let (path, m) = match open(&file, false) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let report = m.validate(ValidateOptions::default());
            if !report.is_valid() {
                for f in report.errors() {
                    eprintln!("{f}");
                }
                eprintln!("✘ fix the errors above first (hangar config validate shows them all)");
                return Ok(exit::INVALID);
            }
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let read = |rel: &str| std::fs::read(base.join(rel)).map_err(|e| e.to_string());
            let opts = ConvertOptions {
                image: image.as_deref(),
                read_file: Some(&read),
            };
            let value = match group {
                Some(g) => serde_json::to_value(machine_config(&m.config, &g, opts)?)?,
                None => serde_json::to_value(machine_configs(&m.config, opts)?)?,
            };
            let text = serde_json::to_string_pretty(&value).context("rendering JSON")?;
            writeln!(std::io::stdout(), "{text}")?;
            Ok(exit::OK)
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
