//! Helpers shared by the suites.

use std::path::Path;

use hangar_image::testing::{LayerBuilder, TempDir, TestImage, busybox_image, write_oci_layout};
use hangar_image::{Digest, ImageStore, ImportOptions, Imported, Reference};

/// Fails clearly when not root: these tests mount, chown and mknod for real.
pub fn require_root() {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert!(
        uid == 0,
        "the hangar-image integration tests must run as root (mounts, chown, mknod)"
    );
}

pub fn tmp(prefix: &str) -> TempDir {
    require_root();
    TempDir::new(prefix).expect("create temp dir")
}

pub fn store(dir: &TempDir) -> ImageStore {
    ImageStore::open(dir.join("store")).expect("open store")
}

pub fn busybox() -> TestImage {
    busybox_image().expect("build the busybox test image (needs busybox-static)")
}

/// Imports the busybox image from an OCI layout dir as `docker.io/hangar/test:v1`.
pub fn import_busybox(store: &ImageStore, dir: &TempDir) -> (Imported, Digest) {
    let layout = dir.join("layout");
    let digest = write_oci_layout(&busybox(), &layout, "v1").expect("write layout");
    let imported = store
        .import(&layout, &options("hangar/test"))
        .expect("import layout");
    assert_eq!(imported.len(), 1);
    (imported.into_iter().next().expect("one image"), digest)
}

pub fn options(repository: &str) -> ImportOptions {
    ImportOptions {
        repository: Some(repository.to_owned()),
        ..ImportOptions::default()
    }
}

pub fn reference(s: &str) -> Reference {
    Reference::parse(s).expect("valid reference")
}

/// An image of `n` tiny layers; layer `i` holds `/layers/l<i>` and overwrites `/top`.
pub fn many_layer_image(n: usize) -> TestImage {
    let layers: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            LayerBuilder::new()
                .dir("layers/", 0o755)
                .file(&format!("layers/l{i}"), 0o644, format!("{i}\n").as_bytes())
                .file("top", 0o644, format!("{i}\n").as_bytes())
                .finish()
        })
        .collect();
    image_of(layers)
}

/// A minimal config around `layers`.
pub fn image_of(layers: Vec<Vec<u8>>) -> TestImage {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let platform = hangar_image::Platform::host();
    TestImage {
        layers,
        config: serde_json::json!({
            "architecture": platform.architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }),
    }
}

/// Mountinfo lines that mention `path`.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let needle = path.to_string_lossy().into_owned();
    text.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// Entries of a directory, sorted.
pub fn ls(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
