//! Imports: OCI layout (dir and tar), docker save, several images per archive, metadata,
//! sharing, concurrency, crash leftovers, corrupt input, GC.

use std::fs;
use std::os::unix::fs::MetadataExt;

use hangar_image::testing::{
    LayerBuilder, gzip, write_docker_save, write_oci_archive, write_oci_layout,
};
use hangar_image::{Error, ExposedPort, ImageStore, ImportOptions};

use crate::support::{busybox, image_of, import_busybox, ls, options, reference, store, tmp};

#[test]
fn oci_layout_dir_tar_and_docker_save_share_layers() {
    let dir = tmp("import-formats");
    let store = store(&dir);
    let (imported, digest) = import_busybox(&store, &dir);
    assert_eq!(imported.image.digest, digest);
    assert_eq!(
        imported.references,
        vec![reference("docker.io/hangar/test:v1")]
    );
    assert_eq!(imported.image.layers.len(), 2);
    assert_eq!(ls(&store.root().join("layers")).len(), 2);

    // The same image as an OCI tar, into the same store: same digest, nothing new unpacked.
    let tar = dir.join("oci.tar");
    write_oci_archive(&busybox(), &tar, "v2").expect("write oci tar");
    let again = store
        .import(&tar, &options("hangar/test"))
        .expect("import tar");
    assert_eq!(again[0].image.digest, digest);
    assert_eq!(again[0].references, vec![reference("hangar/test:v2")]);

    // docker save of the same content, plus a second, one-layer image in the same archive.
    let image = busybox();
    let small = image_of(vec![image.layers[0].clone()]);
    let save = dir.join("save.tar");
    write_docker_save(
        &[
            (&image, &["hangar/saved:latest", "hangar/saved:1"]),
            (&small, &["small:1"]),
        ],
        &save,
    )
    .expect("write docker save");
    let saved = store
        .import(&save, &ImportOptions::default())
        .expect("import docker save");
    assert_eq!(saved.len(), 2);
    assert_eq!(
        saved[0].references,
        vec![
            reference("hangar/saved:latest"),
            reference("hangar/saved:1")
        ]
    );
    assert_eq!(
        saved[1].references,
        vec![reference("docker.io/library/small:1")]
    );
    // docker save layers are uncompressed: other blobs, same diff ids, same layer dirs.
    let diff_ids = |i: &hangar_image::Image| -> Vec<_> {
        i.layers.iter().map(|l| l.diff_id.clone()).collect()
    };
    assert_eq!(diff_ids(&saved[0].image), diff_ids(&imported.image));
    assert_ne!(
        saved[0].image.layers[0].digest,
        imported.image.layers[0].digest
    );
    assert_eq!(
        ls(&store.root().join("layers")).len(),
        2,
        "layers are unpacked once"
    );

    // Re-importing the docker save gives the same (synthesised) digest.
    let fresh = ImageStore::open(dir.join("store2")).expect("open");
    let saved2 = fresh
        .import(&save, &ImportOptions::default())
        .expect("reimport");
    assert_eq!(saved2[0].image.digest, saved[0].image.digest);

    // Lookups.
    for name in [
        "hangar/test:v1",
        "docker.io/hangar/test:v2",
        "hangar/saved",
        "small:1",
    ] {
        assert!(store.lookup(name).expect("lookup").is_some(), "{name}");
    }
    assert_eq!(
        store
            .lookup(&digest.to_string())
            .expect("lookup")
            .map(|i| i.digest),
        Some(digest.clone())
    );
    let pinned = format!("hangar/test@{digest}");
    assert!(store.lookup(&pinned).expect("lookup").is_some());
    assert!(store.lookup("hangar/none:v1").expect("lookup").is_none());
    assert!(matches!(store.lookup("Bad Ref"), Err(Error::Reference(_))));
    assert_eq!(store.images().expect("list").len(), 3);
    assert!(ls(&store.root().join("tmp")).is_empty(), "no temp litter");
}

#[test]
fn gzipped_archive_and_explicit_tag() {
    let dir = tmp("import-gz");
    let store = store(&dir);
    let tar = dir.join("oci.tar");
    let digest = write_oci_archive(&busybox(), &tar, "latest").expect("write");
    let gz = dir.join("oci.tar.gz");
    fs::write(&gz, gzip(&fs::read(&tar).expect("read")).expect("gzip")).expect("write gz");
    let tag = reference("registry.example:5000/team/app:deploy-1");
    let imported = store
        .import(
            &gz,
            &ImportOptions {
                tag: Some(tag.clone()),
                ..ImportOptions::default()
            },
        )
        .expect("import gz");
    // ref.name "latest" without a repository names nothing; the explicit tag does.
    assert_eq!(imported[0].references, vec![tag.clone()]);
    assert_eq!(imported[0].image.digest, digest);
    let via_reader = store
        .import_reader(
            fs::File::open(&gz).expect("open"),
            &ImportOptions::default(),
        )
        .expect("import reader");
    assert_eq!(via_reader[0].image.digest, digest);
    assert!(via_reader[0].references.is_empty());
}

#[test]
fn typed_metadata_and_image_ref() {
    let dir = tmp("import-meta");
    let store = store(&dir);
    let (imported, digest) = import_busybox(&store, &dir);
    let image = imported.image;
    let c = &image.config;
    assert_eq!(c.cmd, vec!["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]);
    assert!(c.entrypoint.is_empty());
    assert_eq!(c.command(), c.cmd);
    assert!(c.env.contains(&"HANGAR_TEST=1".to_owned()));
    assert_eq!(c.working_dir.as_deref(), Some("/www"));
    assert_eq!(c.user.as_deref(), Some("root"));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(
        c.exposed_ports,
        vec![ExposedPort {
            port: 8080,
            protocol: "tcp".to_owned()
        }]
    );
    assert_eq!(image.platform, hangar_image::Platform::host());
    assert_eq!(image.created.as_deref(), Some("2024-01-01T00:00:00Z"));
    let r = reference("hangar/test:v1");
    let image_ref = image.image_ref(&r);
    assert_eq!(image_ref.registry, "docker.io");
    assert_eq!(image_ref.repository, "hangar/test");
    assert_eq!(image_ref.tag, "v1");
    assert_eq!(image_ref.digest, digest.to_string());
    assert_eq!(image_ref.labels["org.hangar.test"], "busybox");
}

#[test]
fn concurrent_imports_of_one_image() {
    let dir = tmp("import-concurrent");
    let layout = dir.join("layout");
    write_oci_layout(&busybox(), &layout, "v1").expect("write layout");
    let root = dir.join("store");
    // Separate handles (like separate processes: no shared lock) and clones of one handle.
    let shared = ImageStore::open(&root).expect("open");
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let store = if i % 2 == 0 {
                shared.clone()
            } else {
                ImageStore::open(&root).expect("open")
            };
            let layout = layout.clone();
            std::thread::spawn(move || store.import(&layout, &options("hangar/test")))
        })
        .collect();
    let digests: Vec<_> = handles
        .into_iter()
        .map(|h| {
            h.join().expect("thread").expect("import")[0]
                .image
                .digest
                .clone()
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(ls(&root.join("layers")).len(), 2);
    assert!(ls(&root.join("tmp")).is_empty(), "losers cleaned up");
    // Each layer is whole: the busybox binary is complete.
    let image = shared
        .lookup("hangar/test:v1")
        .expect("lookup")
        .expect("present");
    let busybox_len = fs::metadata(hangar_image::testing::BUSYBOX)
        .expect("stat")
        .len();
    let unpacked = shared
        .layer_path(&image.layers[0].diff_id)
        .join("bin/busybox");
    assert_eq!(fs::metadata(unpacked).expect("stat").len(), busybox_len);
}

#[test]
fn crash_leftovers_are_removed_and_failures_leave_nothing() {
    let dir = tmp("import-crash");
    let root = dir.join("store");
    let store = ImageStore::open(&root).expect("open");
    // A half-unpacked layer of a dead process (pids never reach 4194304+), and one of a
    // live pid whose start time does not match (the pid was reused).
    let stale = root.join("tmp/4194399.123-7-layer");
    let reused = root.join("tmp/1.1-3-blob");
    fs::write(&reused, b"half").expect("write");
    fs::create_dir_all(stale.join("bin")).expect("mkdir");
    fs::write(stale.join("bin/half"), b"half").expect("write");
    let store2 = ImageStore::open(&root).expect("reopen");
    assert!(!stale.exists(), "stale temp removed at open");
    assert!(!reused.exists(), "temp of a reused pid removed at open");
    drop(store2);

    // A truncated gzip layer: the import fails, no layer dir, no temp, no image.
    let mut image = busybox();
    image.layers.truncate(1);
    let image = image_of(image.layers);
    let layout = dir.join("layout");
    write_oci_layout(&image, &layout, "v1").expect("write");
    let blobs = layout.join("blobs/sha256");
    let diff_id = hangar_image::Digest::of(&image.layers[0]);
    // Truncate the gzip layer blob (the largest) in place.
    let (largest, _) = fs::read_dir(&blobs)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| (e.path(), e.metadata().expect("stat").len()))
        .max_by_key(|(_, len)| *len)
        .expect("blobs");
    let bytes = fs::read(&largest).expect("read");
    let truncated = &bytes[..bytes.len() / 2];
    fs::write(&largest, truncated).expect("truncate");
    let err = store
        .import(&layout, &options("hangar/broken"))
        .expect_err("truncated blob must fail");
    assert!(
        matches!(err, Error::DigestMismatch { .. }),
        "wrong blob is caught by digest first: {err}"
    );
    assert!(!store.has_layer(&diff_id));
    assert!(ls(&root.join("tmp")).is_empty());
    assert!(store.lookup("hangar/broken:v1").expect("lookup").is_none());

    // A layer whose content does not match the config's diff id.
    let mut wrong = image_of(vec![LayerBuilder::new().file("a", 0o644, b"a").finish()]);
    wrong.config["rootfs"]["diff_ids"] =
        serde_json::json!([hangar_image::Digest::of(b"other").to_string()]);
    let layout = dir.join("layout-wrong");
    write_oci_layout(&wrong, &layout, "v1").expect("write");
    let err = store
        .import(&layout, &options("hangar/wrong"))
        .expect_err("diff id mismatch must fail");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(ls(&root.join("layers")).len(), 0);
    assert!(ls(&root.join("tmp")).is_empty());

    // Not an archive at all.
    let junk = dir.join("junk.tar");
    fs::write(&junk, b"definitely not a tar").expect("write");
    assert!(store.import(&junk, &ImportOptions::default()).is_err());
    let empty = dir.join("empty-dir");
    fs::create_dir(&empty).expect("mkdir");
    let err = store
        .import(&empty, &ImportOptions::default())
        .expect_err("empty dir");
    assert!(
        err.to_string().contains("neither an OCI image layout"),
        "{err}"
    );
}

#[test]
fn gc_keeps_what_is_named_or_in_use() {
    let dir = tmp("import-gc");
    let store = store(&dir);
    let (busy, _) = import_busybox(&store, &dir);
    let base_only = image_of(vec![busybox().layers[0].clone()]);
    let save = dir.join("small.tar");
    write_docker_save(&[(&base_only, &["small:1"])], &save).expect("write");
    let small = store
        .import(&save, &ImportOptions::default())
        .expect("import")[0]
        .image
        .clone();
    let report = store.gc(&[]).expect("gc");
    assert!(report.layers_removed.is_empty() && report.images_removed.is_empty());

    // Untag busybox: its record and its top layer go; the shared base layer stays.
    assert!(store.untag(&reference("hangar/test:v1")).expect("untag"));
    // While a machine still uses it, nothing goes.
    let report = store
        .gc(std::slice::from_ref(&busy.image.digest))
        .expect("gc in use");
    assert!(report.images_removed.is_empty() && report.layers_removed.is_empty());
    let report = store.gc(&[]).expect("gc");
    assert_eq!(report.images_removed, vec![busy.image.digest.clone()]);
    assert_eq!(
        report.layers_removed,
        vec![busy.image.layers[1].diff_id.clone()]
    );
    assert!(report.bytes_freed > 0);
    assert!(store.has_layer(&small.layers[0].diff_id));
    assert!(
        !store.has_blob(&busy.image.layers[0].digest),
        "gzip blob only busybox used"
    );
    assert!(store.has_blob(&small.layers[0].digest));
    let usage = store.usage().expect("usage");
    assert!(usage.layers.bytes > 0 && usage.blobs.bytes > 0);
    let layer = store
        .layer_usage(&small.layers[0].diff_id)
        .expect("layer usage");
    let busybox_len = fs::metadata(hangar_image::testing::BUSYBOX)
        .expect("stat")
        .len();
    assert!(layer.apparent_bytes >= busybox_len && layer.apparent_bytes < busybox_len * 2);

    // remove_image drops record and references; gc then frees the rest.
    assert!(store.remove_image(&small.digest).expect("remove"));
    store.gc(&[]).expect("gc");
    assert!(ls(&store.root().join("layers")).is_empty());
    assert!(ls(&store.root().join("blobs/sha256")).is_empty());
    assert!(store.images().expect("list").is_empty());
}

#[test]
fn hardlinks_ownership_and_modes_survive() {
    let dir = tmp("import-meta-fs");
    let store = store(&dir);
    let (imported, _) = import_busybox(&store, &dir);
    let base = store.layer_path(&imported.image.layers[0].diff_id);
    let owned = fs::metadata(base.join("etc/owned")).expect("stat");
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(
        fs::metadata(base.join("bin/suid")).expect("stat").mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(base.join("tmp")).expect("stat").mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(base.join("root")).expect("stat").mode() & 0o7777,
        0o700
    );
    let bb = fs::metadata(base.join("bin/busybox")).expect("stat");
    let link = fs::metadata(base.join("bin/busybox-link")).expect("stat");
    assert_eq!((bb.ino(), bb.nlink()), (link.ino(), 2));
    assert_eq!(bb.mtime(), 1_700_000_000);
    assert_eq!(
        fs::read_link(base.join("bin/sh")).expect("readlink"),
        std::path::PathBuf::from("busybox")
    );
    // Whiteouts in the top layer are overlayfs whiteouts.
    let top = store.layer_path(&imported.image.layers[1].diff_id);
    let wh = fs::symlink_metadata(top.join("etc/hangar-removed")).expect("whiteout");
    use std::os::unix::fs::FileTypeExt;
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(!top.join("etc/.wh.hangar-removed").exists());
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(top.join("opaque"), "trusted.overlay.opaque", &mut buf)
        .expect("opaque xattr");
    assert_eq!(&buf[..n], b"y");
}

#[test]
fn gc_spares_layers_of_mounted_rootfs() {
    let dir = tmp("import-gc-mounted");
    let store = store(&dir);
    let (imported, _) = import_busybox(&store, &dir);
    for (i, strategy) in [
        hangar_image::MountStrategy::Legacy,
        hangar_image::MountStrategy::NewApi,
    ]
    .into_iter()
    .enumerate()
    {
        let machine = dir.join(format!("machine-{i}"));
        store
            .mount_rootfs_with(&imported.image, &machine, strategy)
            .expect("mount");
    }
    // The daemon forgot to pass the image as in use: the mounts still protect the layers.
    assert!(store.untag(&reference("hangar/test:v1")).expect("untag"));
    let report = store.gc(&[]).expect("gc");
    assert_eq!(report.images_removed, vec![imported.image.digest.clone()]);
    assert!(report.layers_removed.is_empty(), "{report:?}");
    for layer in &imported.image.layers {
        assert!(store.has_layer(&layer.diff_id));
    }
    for i in 0..2 {
        hangar_image::remove_rootfs(&dir.join(format!("machine-{i}"))).expect("remove");
    }
    let report = store.gc(&[]).expect("gc");
    assert_eq!(report.layers_removed.len(), 2);
}
