//! Overlay rootfs per machine: merged view, sharing, isolation, idempotency, strategies.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use hangar_image::testing::{write_docker_save, write_oci_layout};
use hangar_image::{
    Error, ImportOptions, MountMethod, MountStrategy, remove_rootfs, rootfs_usage, unmount_rootfs,
};

use crate::support::{
    busybox, image_of, import_busybox, many_layer_image, mounts_under, options, store, tmp,
};

/// The merged view of the busybox test image.
fn check_view(rootfs: &Path) {
    let bb = fs::metadata(rootfs.join("bin/busybox")).expect("busybox in rootfs");
    assert!(bb.permissions().mode() & 0o111 != 0);
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).expect("sh symlink"),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("www/index.html")).expect("index"),
        "hello from hangar\n"
    );
    // Whiteout: the lower file is hidden.
    assert!(
        !rootfs.join("etc/hangar-removed").exists(),
        "whiteout hides the file"
    );
    assert!(rootfs.join("etc/passwd").exists());
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/layer2")).expect("layer2"),
        "from layer 2\n"
    );
    // Opaque: only the top layer's content of /opaque.
    assert_eq!(crate::support::ls(&rootfs.join("opaque")), vec!["upper-c"]);
}

#[test]
fn two_machines_share_layers_and_keep_writes_apart() {
    let dir = tmp("rootfs-two");
    let store = store(&dir);
    let (imported, _) = import_busybox(&store, &dir);
    let image = imported.image;
    let (m1, m2) = (dir.join("machines/m1"), dir.join("machines/m2"));
    let a = store.mount_rootfs(&image, &m1).expect("mount m1");
    let b = store.mount_rootfs(&image, &m2).expect("mount m2");
    assert_eq!(a.method, MountMethod::Legacy);
    check_view(&a.target);
    check_view(&b.target);

    // Shared: both mounts use the same layer directories, top first.
    assert_eq!(a.lower, b.lower);
    assert_eq!(
        a.lower,
        vec![
            store.layer_path(&image.layers[1].diff_id),
            store.layer_path(&image.layers[0].diff_id)
        ]
    );
    // The same inode backs /bin/busybox in the layer and in both machines.
    let in_layer = fs::metadata(a.lower[1].join("bin/busybox"))
        .expect("stat")
        .ino();
    assert_eq!(
        fs::metadata(a.target.join("bin/busybox"))
            .expect("stat")
            .ino(),
        in_layer
    );
    assert_eq!(
        fs::metadata(b.target.join("bin/busybox"))
            .expect("stat")
            .ino(),
        in_layer
    );

    // Separate upper dirs: writes and deletes stay in their machine.
    assert_ne!(a.upper, b.upper);
    fs::write(a.target.join("tmp/hello"), b"m1").expect("write in m1");
    assert!(a.upper.join("tmp/hello").exists());
    assert!(!b.target.join("tmp/hello").exists());
    assert!(!a.lower[1].join("tmp/hello").exists() && !a.lower[0].join("tmp/hello").exists());
    fs::remove_file(b.target.join("www/index.html")).expect("delete in m2");
    assert!(a.target.join("www/index.html").exists());
    assert!(
        a.lower[1].join("www/index.html").exists() || a.lower[0].join("www/index.html").exists()
    );
    let wh = fs::symlink_metadata(b.upper.join("www/index.html")).expect("whiteout in m2 upper");
    assert!(wh.file_type().is_char_device());
    // upper, upper/tmp, upper/tmp/hello
    assert_eq!(rootfs_usage(&m1).expect("usage").inodes, 3);

    // Idempotent: mounting again reuses the mount.
    let again = store.mount_rootfs(&image, &m1).expect("remount");
    assert_eq!(again.method, MountMethod::Reused);
    assert_eq!(again.lower, a.lower);
    assert_eq!(mounts_under(&m1).len(), 1, "not stacked");

    // Another image on a mounted machine dir is refused.
    let other = image_of(vec![busybox().layers[0].clone()]);
    let save = dir.join("other.tar");
    write_docker_save(&[(&other, &["other:1"])], &save).expect("write");
    let other = store
        .import(&save, &ImportOptions::default())
        .expect("import")[0]
        .image
        .clone();
    match store.mount_rootfs(&other, &m1) {
        Err(Error::RootfsMismatch { .. }) => {}
        other => panic!("expected RootfsMismatch, got {other:?}"),
    }

    // Unmount both; again is fine; nothing left in mountinfo.
    assert!(unmount_rootfs(&m1).expect("unmount m1"));
    assert!(unmount_rootfs(&m2).expect("unmount m2"));
    assert!(!unmount_rootfs(&m1).expect("unmount again"));
    assert!(!unmount_rootfs(&dir.join("machines/never")).expect("missing dir"));
    assert!(
        mounts_under(dir.path()).is_empty(),
        "{:?}",
        mounts_under(dir.path())
    );
    // The upper dir survives an unmount (the machine's disk) until removed.
    assert!(a.upper.join("tmp/hello").exists());
    let remounted = store
        .mount_rootfs(&image, &m1)
        .expect("mount after unmount");
    assert_eq!(
        fs::read(remounted.target.join("tmp/hello")).expect("write survived"),
        b"m1"
    );
    unmount_rootfs(&m1).expect("unmount m1");
    // Unmounted, but m1's upper dir belongs to the first image: another image is refused
    // until the machine's rootfs is removed.
    match store.mount_rootfs(&other, &m1) {
        Err(Error::RootfsMismatch { .. }) => {}
        other => panic!("expected RootfsMismatch, got {other:?}"),
    }
    remove_rootfs(&m1).expect("remove m1");
    let fresh = store
        .mount_rootfs(&other, &m1)
        .expect("mount another image");
    assert!(!fresh.target.join("tmp/hello").exists());
    assert!(!fresh.target.join("etc/layer2").exists());
    remove_rootfs(&m1).expect("remove m1");
    remove_rootfs(&m2).expect("remove m2");
    assert!(
        crate::support::ls(&m1).is_empty(),
        "{:?}",
        crate::support::ls(&m1)
    );
    assert!(mounts_under(dir.path()).is_empty());
}

#[test]
fn every_mount_strategy_gives_the_same_view() {
    let dir = tmp("rootfs-strategies");
    let store = store(&dir);
    let (imported, _) = import_busybox(&store, &dir);
    for (i, (strategy, method)) in [
        (MountStrategy::Legacy, MountMethod::Legacy),
        (MountStrategy::NewApi, MountMethod::NewApi),
        (MountStrategy::FdPaths, MountMethod::FdPaths),
    ]
    .into_iter()
    .enumerate()
    {
        let machine = dir.join(format!("machines/{i}"));
        let mount = store
            .mount_rootfs_with(&imported.image, &machine, strategy)
            .unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
        assert_eq!(mount.method, method);
        check_view(&mount.target);
        assert!(unmount_rootfs(&machine).expect("unmount"));
    }
    assert!(mounts_under(dir.path()).is_empty());
}

#[test]
fn long_lowerdir_lists_fall_back() {
    let dir = tmp("rootfs-many-layers-with-a-long-path-to-make-each-lowerdir-entry-long");
    let store = store(&dir);
    let layout = dir.join("layout");
    write_oci_layout(&many_layer_image(60), &layout, "v1").expect("write");
    let image = store
        .import(&layout, &options("hangar/many"))
        .expect("import")[0]
        .image
        .clone();
    let per_layer = store.layer_path(&image.layers[0].diff_id).as_os_str().len() + 1;
    assert!(
        per_layer * 60 > 4096,
        "the test must exceed a page ({per_layer} × 60)"
    );

    let machine = dir.join("machines/auto");
    let mount = store.mount_rootfs(&image, &machine).expect("auto mount");
    assert_ne!(mount.method, MountMethod::Legacy);
    assert_eq!(mount.lower.len(), 60);
    assert_eq!(
        fs::read_to_string(mount.target.join("top")).expect("top"),
        "59\n"
    );
    assert_eq!(crate::support::ls(&mount.target.join("layers")).len(), 60);
    unmount_rootfs(&machine).expect("unmount");

    let machine = dir.join("machines/fd");
    let mount = store
        .mount_rootfs_with(&image, &machine, MountStrategy::FdPaths)
        .expect("fd-path mount");
    assert_eq!(
        fs::read_to_string(mount.target.join("layers/l0")).expect("l0"),
        "0\n"
    );
    unmount_rootfs(&machine).expect("unmount");

    let machine = dir.join("machines/legacy");
    let err = store
        .mount_rootfs_with(&image, &machine, MountStrategy::Legacy)
        .expect_err("too long for mount(2)");
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(mounts_under(dir.path()).is_empty());
}

#[test]
fn missing_layer_is_reported() {
    let dir = tmp("rootfs-missing");
    let store = store(&dir);
    let (imported, _) = import_busybox(&store, &dir);
    fs::remove_dir_all(store.layer_path(&imported.image.layers[1].diff_id)).expect("rm");
    match store.mount_rootfs(&imported.image, &dir.join("m")) {
        Err(Error::LayerMissing(d)) => assert_eq!(d, imported.image.layers[1].diff_id),
        other => panic!("expected LayerMissing, got {other:?}"),
    }
}

#[test]
fn many_machines_cost_only_their_upper_dirs() {
    let dir = tmp("rootfs-many-machines");
    let store = store(&dir);
    let (imported, _) = import_busybox(&store, &dir);
    let layers_before = store.usage().expect("usage").layers;
    for i in 0..20 {
        let m = dir.join(format!("machines/{i}"));
        store.mount_rootfs(&imported.image, &m).expect("mount");
    }
    assert_eq!(store.usage().expect("usage").layers, layers_before);
    for i in 0..20 {
        let m = dir.join(format!("machines/{i}"));
        let u = rootfs_usage(&m).expect("usage");
        assert_eq!(u.inodes, 1, "an idle machine has only its empty upper dir");
        remove_rootfs(&m).expect("remove");
    }
    assert!(mounts_under(dir.path()).is_empty());
}
