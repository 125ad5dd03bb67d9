//! `hangar-manifest`: the fly.toml engine.
//!
//! Owns reading a fly.toml (or `.json` / `.yaml`) in every shape the reference CLI accepts,
//! normalising its legacy shapes, validating it exactly as the reference does (with file, line
//! and column on every finding), writing it back out, and converting it into the Machines API
//! config of each process group.
//!
//! Pure: no async, no network, no IO beyond reading the manifest (and, on request, the files
//! it names through a caller-supplied reader). The pipeline:
//!
//! ```text
//! text ──source──▶ Node tree (positions) ──patch──▶ current shape ──decode──▶ Config
//!                                                                    │
//!                         validate (findings) ◀──────────────────────┤
//!                         machine (MachineConfig per group) ◀────────┘
//! ```

pub mod finding;
pub mod groups;
pub mod guest;
pub mod launch;
pub mod machine;
pub mod model;
pub mod render;
pub mod source;
pub mod units;
pub mod validate;

mod decode;
mod patch;
mod strict;

use std::path::Path;

use thiserror::Error;

pub use finding::{Finding, Report, Severity};
pub use machine::{ConvertError, ConvertOptions, machine_config, machine_configs};
pub use model::Config;
pub use source::{Format, Node, Pos};
pub use validate::ValidateOptions;

/// Largest manifest read. Real ones are a few KB; this keeps hostile input cheap.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// A manifest that was read: the typed config plus what is needed to explain it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The normalised configuration.
    pub config: Config,
    /// The patched tree, for positions.
    pub tree: Node,
    /// The file name as given (used in findings).
    pub file: String,
    /// The format it was read as.
    pub format: Format,
    /// Problems found while reading (legacy shapes that could not be patched, wrong types).
    pub parse_findings: Vec<Finding>,
    unknown: Vec<decode::UnknownKey>,
}

/// Why a manifest could not be read at all.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read (exit code 2 in the CLI).
    #[error("can not read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The text is not valid TOML / JSON / YAML, or too large (exit code 1).
    #[error("{0}")]
    Syntax(Finding),
}

impl LoadError {
    /// The finding, for syntax errors.
    pub fn finding(&self) -> Option<&Finding> {
        match self {
            LoadError::Syntax(f) => Some(f),
            LoadError::Io { .. } => None,
        }
    }
}

/// Reads and parses the manifest at `path`; the format follows the extension.
pub fn load(path: &Path) -> Result<Manifest, LoadError> {
    let name = path.display().to_string();
    let io = |source| LoadError::Io {
        path: name.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_MANIFEST_BYTES as u64 {
        return Err(too_large(&name, meta.len() as usize));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(e.as_bytes());
        let pos = Pos::of_offset(&text, e.utf8_error().valid_up_to());
        LoadError::Syntax(
            Finding::new(
                Severity::Error,
                &name,
                pos,
                "",
                "the file is not valid UTF-8 text",
            )
            .hint("save the file as UTF-8"),
        )
    })?;
    parse(&text, Format::from_path(path), &name)
}

fn too_large(name: &str, len: usize) -> LoadError {
    LoadError::Syntax(
        Finding::new(
            Severity::Error,
            name,
            Pos::new(1, 1),
            "",
            format!(
                "the file is {len} bytes; a manifest may be at most {MAX_MANIFEST_BYTES} bytes"
            ),
        )
        .hint("is this really a fly.toml?"),
    )
}

/// Parses manifest text. `file` names it in findings.
pub fn parse(text: &str, format: Format, file: &str) -> Result<Manifest, LoadError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(too_large(file, text.len()));
    }
    let mut tree = Node::parse(text, format).map_err(|e| {
        LoadError::Syntax(
            Finding::new(
                Severity::Error,
                file,
                e.pos,
                "",
                format!("invalid {}: {}", format.as_str().to_uppercase(), e.message),
            )
            .hint(format!(
                "fix the {} syntax at this position",
                format.as_str().to_uppercase()
            )),
        )
    })?;
    let mut parse_findings = Vec::new();
    for e in patch::apply(&mut tree) {
        let mut f = Finding::new(Severity::Error, file, e.pos, &e.path, e.message);
        f.hint = e.hint;
        parse_findings.push(f);
    }
    let (config, type_errors, unknown) = decode::decode(&tree);
    for e in type_errors {
        parse_findings.push(
            Finding::new(
                Severity::Error,
                file,
                e.pos,
                &decode::render(&e.path),
                e.message,
            )
            .hint("fix the value's type; see the fly.toml reference for this key"),
        );
    }
    Ok(Manifest {
        config,
        tree,
        file: file.to_string(),
        format,
        parse_findings,
        unknown,
    })
}

impl Manifest {
    /// Validates the manifest.
    pub fn validate(&self, opts: ValidateOptions) -> Report {
        validate::validate(self, opts)
    }

    /// Keys the manifest does not understand, as `path` strings (what `--strict` reports).
    pub fn unknown_keys(&self) -> Vec<String> {
        self.unknown
            .iter()
            .map(|u| source::path_string(&u.path))
            .collect()
    }
}
