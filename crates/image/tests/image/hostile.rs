//! Hostile layers: nothing may be written, linked, deleted or marked outside the layer.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hangar_image::testing::{LayerBuilder, TempDir, write_oci_layout};
use hangar_image::unpack::unpack_layer;
use hangar_image::{Error, UnpackStats};
use tar::EntryType;

use crate::support::{image_of, ls, options, store, tmp};

/// A victim directory outside the layer, with one file.
struct Victim {
    dir: PathBuf,
}

impl Victim {
    fn new(tmp: &TempDir) -> Self {
        let dir = tmp.join("victim");
        fs::create_dir_all(&dir).expect("mkdir victim");
        fs::write(dir.join("secret"), b"secret").expect("write secret");
        Self { dir }
    }

    fn s(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// The victim is exactly as created: one file, same content, one link, no xattr.
    fn untouched(&self) {
        assert_eq!(
            ls(&self.dir),
            vec!["secret"],
            "nothing created next to the secret"
        );
        assert_eq!(fs::read(self.dir.join("secret")).expect("read"), b"secret");
        assert_eq!(
            fs::metadata(self.dir.join("secret")).expect("stat").nlink(),
            1
        );
        let mut buf = [0u8; 8];
        assert!(
            rustix::fs::getxattr(&self.dir, "trusted.overlay.opaque", &mut buf).is_err(),
            "victim dir must not be marked opaque"
        );
    }
}

fn unpack(tar: &[u8], dest: &Path) -> Result<UnpackStats, Error> {
    fs::create_dir_all(dest).expect("mkdir dest");
    unpack_layer(tar, dest)
}

#[test]
fn dotdot_paths_are_refused() {
    let dir = tmp("hostile-dotdot");
    let victim = Victim::new(&dir);
    let depth = "../".repeat(20);
    for path in [
        format!("{depth}{}/pwned", &victim.s()[1..]),
        "../../etc/passwd-hangar-test".to_owned(),
        "a/../../b".to_owned(),
    ] {
        let tar = LayerBuilder::new().file(&path, 0o644, b"pwned").finish();
        let dest = dir.join(format!("layer-{}", path.len()));
        let err = unpack(&tar, &dest).expect_err("must refuse");
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{path}: {err}");
    }
    assert!(!Path::new("/etc/passwd-hangar-test").exists());
    victim.untouched();
}

#[test]
fn absolute_paths_stay_inside() {
    let dir = tmp("hostile-abs");
    let victim = Victim::new(&dir);
    let dest = dir.join("layer");
    let target = format!("{}/pwned", victim.s());
    let tar = LayerBuilder::new()
        .file(&target, 0o644, b"pwned")
        .file(&format!("{}/secret", victim.s()), 0o644, b"overwritten")
        .finish();
    unpack(&tar, &dest).expect("absolute paths are taken relative to the layer");
    assert_eq!(
        fs::read(dest.join(&target[1..])).expect("inside the layer"),
        b"pwned"
    );
    victim.untouched();
}

#[test]
fn symlink_escapes_are_contained() {
    let dir = tmp("hostile-symlink");
    let victim = Victim::new(&dir);
    let v = victim.s();
    let up = "../".repeat(20);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Absolute symlink to the victim, then a file written through it.
        (
            "abs",
            LayerBuilder::new()
                .symlink("evil", &v)
                .file("evil/pwned", 0o644, b"pwned")
                .finish(),
        ),
        // Relative symlink climbing out, then a file written through it.
        (
            "rel",
            LayerBuilder::new()
                .symlink("evil", &format!("{up}{}", &v[1..]))
                .file("evil/pwned", 0o644, b"pwned")
                .finish(),
        ),
        // Symlink to "/" then a path through it to the victim.
        (
            "root",
            LayerBuilder::new()
                .symlink("r", "/")
                .file(&format!("r{v}/pwned"), 0o644, b"pwned")
                .finish(),
        ),
        // A symlink replaced by a file: the file must not be written through the link.
        (
            "overwrite",
            LayerBuilder::new()
                .symlink("link", &format!("{v}/secret"))
                .file("link", 0o644, b"overwritten")
                .finish(),
        ),
        // Whiteout and opaque markers through a symlink.
        (
            "whiteout",
            LayerBuilder::new()
                .symlink("evil", &v)
                .file("evil/.wh.secret", 0o644, b"")
                .file("evil/.wh..wh..opq", 0o644, b"")
                .finish(),
        ),
        // A directory entry through a symlink, then chmod via its metadata.
        (
            "dir",
            LayerBuilder::new()
                .symlink("evil", &v)
                .dir("evil/", 0o777)
                .finish(),
        ),
        // A symlink loop.
        (
            "loop",
            LayerBuilder::new()
                .symlink("a", "b")
                .symlink("b", "a")
                .file("a/x", 0o644, b"x")
                .finish(),
        ),
    ];
    for (name, tar) in cases {
        let dest = dir.join(format!("layer-{name}"));
        // Either refused or contained; both are fine as long as the victim is untouched.
        let result = unpack(&tar, &dest);
        victim.untouched();
        if name == "overwrite" {
            result.as_ref().expect("overwrite is legal");
            let link = fs::symlink_metadata(dest.join("link")).expect("stat");
            assert!(link.is_file());
            assert_eq!(fs::read(dest.join("link")).expect("read"), b"overwritten");
        }
        if name == "root" {
            result.as_ref().expect("contained");
            assert!(dest.join(format!("{}/pwned", &v[1..])).exists());
        }
    }
    assert_eq!(
        fs::metadata(&victim.dir).expect("stat").mode() & 0o777,
        0o755
    );
}

#[test]
fn hardlink_escapes_are_refused() {
    let dir = tmp("hostile-hardlink");
    let victim = Victim::new(&dir);
    let v = victim.s();
    let cases = [
        LayerBuilder::new()
            .hardlink("hl", &format!("{v}/secret"))
            .finish(),
        LayerBuilder::new()
            .hardlink("hl", &format!("{}{}/secret", "../".repeat(20), &v[1..]))
            .finish(),
        LayerBuilder::new()
            .symlink("evil", &v)
            .hardlink("hl", "evil/secret")
            .finish(),
        LayerBuilder::new().hardlink("hl", "/etc/passwd").finish(),
    ];
    for (i, tar) in cases.into_iter().enumerate() {
        let dest = dir.join(format!("layer-{i}"));
        let err = unpack(&tar, &dest).expect_err("hardlink out of the layer must fail");
        assert!(
            matches!(err, Error::UnsafeEntry { .. } | Error::InvalidArchive(_)),
            "case {i}: {err}"
        );
        victim.untouched();
    }
    assert_eq!(fs::metadata("/etc/passwd").expect("stat").nlink(), 1);
}

#[test]
fn devices_and_overlay_xattrs_are_not_taken_from_layers() {
    let dir = tmp("hostile-devices");
    let dest = dir.join("layer");
    let tar = LayerBuilder::new()
        .raw(EntryType::Char, b"dev/kmsg", b"", b"", 0o666)
        .raw(EntryType::Block, b"dev/sda", b"", b"", 0o666)
        .raw(EntryType::Fifo, b"run/fifo", b"", b"", 0o600)
        .dir("d/", 0o755)
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.hangar", b"kept"),
        ])
        .dir("x/", 0o755)
        .finish();
    let stats = unpack(&tar, &dest).expect("unpack");
    assert_eq!(stats.skipped, 2, "{stats:?}");
    assert!(!dest.join("dev/kmsg").exists() && !dest.join("dev/sda").exists());
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(dest.join("run/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    let mut buf = [0u8; 16];
    assert!(rustix::fs::getxattr(dest.join("x"), "trusted.overlay.opaque", &mut buf).is_err());
    assert!(rustix::fs::getxattr(dest.join("x"), "trusted.overlay.redirect", &mut buf).is_err());
    let n = rustix::fs::getxattr(dest.join("x"), "user.hangar", &mut buf).expect("user xattr");
    assert_eq!(&buf[..n], b"kept");
}

#[test]
fn failed_hostile_import_leaves_nothing() {
    let dir = tmp("hostile-import");
    let victim = Victim::new(&dir);
    let store = store(&dir);
    let tar = LayerBuilder::new()
        .file("ok", 0o644, b"fine")
        .file("../../../../../../../../etc/hangar-pwned", 0o644, b"x")
        .finish();
    let layout = dir.join("layout");
    write_oci_layout(&image_of(vec![tar]), &layout, "v1").expect("write");
    let err = store
        .import(&layout, &options("hangar/hostile"))
        .expect_err("hostile layer");
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(ls(&store.root().join("layers")).is_empty());
    assert!(ls(&store.root().join("tmp")).is_empty());
    assert!(store.lookup("hangar/hostile:v1").expect("lookup").is_none());
    assert!(!Path::new("/etc/hangar-pwned").exists());
    victim.untouched();
}
