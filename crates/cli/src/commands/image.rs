//! `hangar image pack`: a directory → an OCI image archive, for `hangar deploy --image`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Pack a directory (the image's whole filesystem) into an OCI image archive.
    Pack {
        /// The root filesystem.
        dir: PathBuf,
        /// Where to write the archive.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Tag recorded in the archive.
        #[arg(long, default_value = "latest")]
        tag: String,
        /// CMD, as words (repeat for each).
        #[arg(long = "cmd")]
        cmd: Vec<String>,
        /// ENTRYPOINT, as words (repeat for each).
        #[arg(long = "entrypoint")]
        entrypoint: Vec<String>,
        /// ENV, NAME=VALUE (repeatable).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// WORKDIR.
        #[arg(long)]
        workdir: Option<String>,
        /// EXPOSE, e.g. 8080/tcp (repeatable).
        #[arg(long = "expose")]
        expose: Vec<String>,
    },
}

pub(crate) fn run(c: ImageCommand) -> anyhow::Result<u8> {
    let ImageCommand::Pack {
        dir,
        output,
        tag,
        cmd,
        entrypoint,
        env,
        workdir,
        expose,
    } = c;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
        bail!("--env {bad}: expected NAME=VALUE");
    }
    let digest = hangar_client::pack::oci_archive(
        &dir,
        &hangar_client::pack::ImageConfig {
            entrypoint,
            cmd,
            env,
            workdir,
            exposed_ports: expose,
        },
        &tag,
        &output,
    )
    .map_err(anyhow::Error::msg)
    .with_context(|| format!("packing {}", dir.display()))?;
    println!("{} {digest}", output.display());
    Ok(exit::OK)
}
