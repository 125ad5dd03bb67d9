//! Packing a directory into an OCI image archive (one layer), so that apps can be built
//! offline with nothing but Hangar: `hangar image pack DIR -o app.tar` then `hangar deploy
//! --image app.tar`. Symlinks are kept as symlinks; files keep their mode; owners are root.

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The image's runtime config.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// CMD.
    pub cmd: Vec<String>,
    /// ENV, `NAME=value`.
    pub env: Vec<String>,
    /// WORKDIR.
    pub workdir: Option<String>,
    /// Ports (documentation only), e.g. `8080/tcp`.
    pub exposed_ports: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn io(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The layer: a tar of `dir` (paths relative to it), deterministic (sorted, mtime 0).
fn layer_tar(dir: &Path) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d.display().to_string(), e))? {
            let e = e.map_err(|e| io(&d.display().to_string(), e))?;
            let p = e.path();
            let ft = e.file_type().map_err(|e| io(&p.display().to_string(), e))?;
            if ft.is_dir() {
                stack.push(p.clone());
            }
            entries.push(p);
        }
    }
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(dir).map_err(|e| io("path", e))?;
        let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p.display().to_string(), e))?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        {
            use std::os::unix::fs::PermissionsExt as _;
            h.set_mode(meta.permissions().mode() & 0o7777);
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p).map_err(|e| io(&p.display().to_string(), e))?;
            h.set_size(0);
            b.append_link(&mut h, rel, target)
                .map_err(|e| io(&p.display().to_string(), e))?;
        } else if meta.is_dir() {
            h.set_size(0);
            b.append_data(&mut h, rel, std::io::empty())
                .map_err(|e| io(&p.display().to_string(), e))?;
        } else if meta.is_file() {
            let f = std::fs::File::open(&p).map_err(|e| io(&p.display().to_string(), e))?;
            h.set_size(meta.len());
            b.append_data(&mut h, rel, f)
                .map_err(|e| io(&p.display().to_string(), e))?;
        }
    }
    b.into_inner().map_err(|e| io("layer", e))
}

/// Writes an OCI image-layout tar of `dir` with `config` to `out`, tagged `tag`; returns
/// the manifest digest.
pub fn oci_archive(
    dir: &Path,
    config: &ImageConfig,
    tag: &str,
    out: &Path,
) -> Result<String, String> {
    let tar = layer_tar(dir)?;
    let diff_id = sha(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).map_err(|e| io("compressing", e))?;
    let layer = gz.finish().map_err(|e| io("compressing", e))?;
    let layer_digest = sha(&layer);
    let mut cfg = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": config.entrypoint,
            "Cmd": config.cmd,
            "Env": config.env,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "hangar image pack"}],
    });
    if let Some(w) = &config.workdir {
        cfg["config"]["WorkingDir"] = serde_json::json!(w);
    }
    if !config.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = config
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect();
        cfg["config"]["ExposedPorts"] = serde_json::Value::Object(ports);
    }
    let cfg = serde_json::to_vec(&cfg).map_err(|e| io("config", e))?;
    let cfg_digest = sha(&cfg);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    }))
    .map_err(|e| io("manifest", e))?;
    let manifest_digest = sha(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))
    .map_err(|e| io("index", e))?;
    let file = std::fs::File::create(out).map_err(|e| io(&out.display().to_string(), e))?;
    let mut t = tar::Builder::new(file);
    let mut add = |name: &str, bytes: &[u8]| -> Result<(), String> {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        t.append_data(&mut h, name, bytes).map_err(|e| io(name, e))
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for (d, bytes) in [
        (&cfg_digest, &cfg),
        (&layer_digest, &layer),
        (&manifest_digest, &manifest),
    ] {
        let name = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        add(&name, bytes)?;
    }
    t.into_inner()
        .and_then(|mut f| f.flush().map(|()| f))
        .map_err(|e| io(&out.display().to_string(), e))?;
    Ok(manifest_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_deterministically_with_links_and_modes() {
        let dir = std::env::temp_dir().join(format!("hangar-pack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/bin")).expect("mkdir");
        std::fs::write(dir.join("root/bin/run"), "#!/bin/sh\necho hi\n").expect("write");
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                dir.join("root/bin/run"),
                std::fs::Permissions::from_mode(0o755),
            )
            .expect("chmod");
        }
        std::os::unix::fs::symlink("run", dir.join("root/bin/alias")).expect("symlink");
        let cfg = ImageConfig {
            cmd: vec!["/bin/run".into()],
            ..ImageConfig::default()
        };
        let a = oci_archive(&dir.join("root"), &cfg, "v1", &dir.join("a.tar")).expect("pack");
        let b = oci_archive(&dir.join("root"), &cfg, "v1", &dir.join("b.tar")).expect("pack");
        assert_eq!(a, b, "same input, same digest");
        let layer = layer_tar(&dir.join("root")).expect("layer");
        let mut ar = tar::Archive::new(&layer[..]);
        let mut seen = Vec::new();
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            seen.push((
                e.path().expect("path").display().to_string(),
                e.header().mode().expect("mode"),
                e.header().entry_type().is_symlink(),
            ));
        }
        assert!(seen.contains(&("bin/run".into(), 0o755, false)), "{seen:?}");
        assert!(
            seen.iter().any(|(p, _, l)| p == "bin/alias" && *l),
            "{seen:?}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
