//! Pulls from a real registry: Debian's `docker-registry`, fed by `skopeo copy`.
//! Missing binaries fail the tests with the apt package to install.

use std::sync::{Arc, Mutex};

use hangar_image::pull::ProgressFn;
use hangar_image::testing::{Registry, write_oci_layout};
use hangar_image::{
    Credentials, Error, ImageStore, PullEvent, PullOptions, Puller, PullerConfig, Reference,
    unmount_rootfs,
};

use crate::support::{busybox, many_layer_image, mounts_under, reference, store, tmp};

fn registry() -> Registry {
    Registry::start().unwrap_or_else(|e| panic!("cannot start the test registry: {e}"))
}

fn recorder() -> (ProgressFn, Arc<Mutex<Vec<PullEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let f: ProgressFn = Arc::new(move |e: &PullEvent| {
        sink.lock().expect("events").push(e.clone());
    });
    (f, events)
}

fn insecure() -> PullOptions {
    PullOptions {
        insecure: true,
        ..PullOptions::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn pull_from_a_real_registry_and_reuse_blobs() {
    let dir = tmp("registry-pull");
    let registry = registry();
    let layout = dir.join("layout");
    let manifest_digest = write_oci_layout(&busybox(), &layout, "v1").expect("layout");
    registry
        .push_oci_layout(&layout, "v1", "hangar/test", "v1")
        .expect("skopeo push");
    let store = store(&dir);
    let puller = Puller::new(store.clone(), PullerConfig::default()).expect("puller");
    let r = reference(&format!("{}/hangar/test:v1", registry.host()));
    let rt = runtime();

    let (progress, events) = recorder();
    let image = rt
        .block_on(puller.pull(&r, &insecure(), Some(progress)))
        .expect("pull");
    assert_eq!(image.digest, manifest_digest, "skopeo kept the manifest");
    assert_eq!(image.config.cmd[0], "/bin/httpd");
    let events = events.lock().expect("events").clone();
    assert!(matches!(
        events.first(),
        Some(PullEvent::Resolved { layers: 2, .. })
    ));
    let downloaded = events
        .iter()
        .filter(|e| matches!(e, PullEvent::LayerDownloaded { .. }))
        .count();
    assert_eq!(downloaded, 2);
    let progress_done: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            PullEvent::LayerProgress { done, total, .. } if done == total => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(
        progress_done.len(),
        2,
        "each layer reports its last byte: {events:?}"
    );
    match events.last() {
        Some(PullEvent::Done {
            downloaded_bytes, ..
        }) => assert_eq!(
            *downloaded_bytes,
            image.layers.iter().map(|l| l.size).sum::<u64>()
        ),
        other => panic!("last event {other:?}"),
    }
    assert_eq!(
        store.resolve(&r).expect("resolve").map(|i| i.digest),
        Some(manifest_digest.clone())
    );

    // Second pull: the registry is asked for the manifest only; every layer is cached.
    let (progress, events) = recorder();
    let again = rt
        .block_on(puller.pull(&r, &insecure(), Some(progress)))
        .expect("second pull");
    assert_eq!(again.digest, manifest_digest);
    let events = events.lock().expect("events").clone();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, PullEvent::LayerCached { .. }))
            .count(),
        2
    );
    assert!(!events.iter().any(|e| matches!(
        e,
        PullEvent::LayerProgress { .. } | PullEvent::LayerDownloaded { .. }
    )));
    assert!(matches!(
        events.last(),
        Some(PullEvent::Done {
            downloaded_bytes: 0,
            ..
        })
    ));

    // `ensure` does not even ask.
    let ensured = rt
        .block_on(puller.ensure(&r, &insecure(), None))
        .expect("ensure");
    assert_eq!(ensured.digest, manifest_digest);

    // By digest into a fresh store; then mount it.
    let fresh = ImageStore::open(dir.join("store2")).expect("open");
    let puller2 = Puller::new(fresh.clone(), PullerConfig::default()).expect("puller");
    let pinned = Reference::parse(&format!(
        "{}/hangar/test@{manifest_digest}",
        registry.host()
    ))
    .expect("pinned ref");
    let image = rt
        .block_on(puller2.pull(&pinned, &insecure(), None))
        .expect("pull by digest");
    assert_eq!(image.digest, manifest_digest);
    assert!(fresh.resolve(&pinned).expect("resolve").is_some());
    let machine = dir.join("machine");
    let mount = fresh
        .mount_rootfs(&image, &machine)
        .expect("mount pulled image");
    assert!(mount.target.join("bin/busybox").exists());
    assert!(!mount.target.join("etc/hangar-removed").exists());
    unmount_rootfs(&machine).expect("unmount");
    assert!(mounts_under(dir.path()).is_empty());

    // Errors: unknown tag, unknown repository, wrong digest, https against plain http.
    let missing = reference(&format!("{}/hangar/test:nope", registry.host()));
    let err = rt
        .block_on(puller.pull(&missing, &insecure(), None))
        .expect_err("unknown tag");
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    let bogus = Reference::parse(&format!(
        "{}/hangar/test@sha256:{}",
        registry.host(),
        "0".repeat(64)
    ))
    .expect("ref");
    assert!(rt.block_on(puller.pull(&bogus, &insecure(), None)).is_err());
    let err = rt
        .block_on(puller.pull(&r, &PullOptions::default(), None))
        .expect_err("https to an http registry");
    assert!(err.is_retryable(), "network errors are retryable: {err}");
    // The insecure list in the config works like the per-pull flag.
    let configured = Puller::new(
        store.clone(),
        PullerConfig {
            insecure_registries: vec![registry.host()],
            ..PullerConfig::default()
        },
    )
    .expect("puller");
    rt.block_on(configured.pull(&r, &PullOptions::default(), None))
        .expect("insecure via config");
}

#[test]
fn pull_with_basic_auth() {
    let dir = tmp("registry-basic");
    let registry = Registry::start_with_basic_auth()
        .unwrap_or_else(|e| panic!("cannot start the test registry: {e}"));
    let layout = dir.join("layout");
    let digest = write_oci_layout(&busybox(), &layout, "v1").expect("layout");
    registry
        .push_oci_layout(&layout, "v1", "private/app", "v1")
        .expect("push");
    let store = store(&dir);
    let r = reference(&format!("{}/private/app:v1", registry.host()));
    let rt = runtime();

    let anonymous = Puller::new(store.clone(), PullerConfig::default()).expect("puller");
    let err = rt
        .block_on(anonymous.pull(&r, &insecure(), None))
        .expect_err("anonymous pull of a private registry");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");

    let wrong = PullOptions {
        insecure: true,
        credentials: Some(Credentials {
            username: "hangar".into(),
            password: "wrong".into(),
        }),
        ..PullOptions::default()
    };
    let err = rt
        .block_on(anonymous.pull(&r, &wrong, None))
        .expect_err("wrong password");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(
        !format!("{wrong:?}").contains("wrong"),
        "passwords are redacted"
    );

    let mut config = PullerConfig::default();
    config.credentials.insert(
        registry.host(),
        Credentials {
            username: hangar_image::testing::REGISTRY_USER.into(),
            password: hangar_image::testing::REGISTRY_PASSWORD.into(),
        },
    );
    let authed = Puller::new(store.clone(), config).expect("puller");
    let image = rt
        .block_on(authed.pull(&r, &insecure(), None))
        .expect("pull with credentials");
    assert_eq!(image.digest, digest);
}

#[test]
fn layer_downloads_are_bounded() {
    let dir = tmp("registry-bounded");
    let registry = registry();
    let layout = dir.join("layout");
    write_oci_layout(&many_layer_image(8), &layout, "v1").expect("layout");
    registry
        .push_oci_layout(&layout, "v1", "hangar/many", "v1")
        .expect("push");
    let r = reference(&format!("{}/hangar/many:v1", registry.host()));
    let rt = runtime();
    for bound in [1usize, 3] {
        let store = ImageStore::open(dir.join(format!("store-{bound}"))).expect("open");
        let puller = Puller::new(
            store,
            PullerConfig {
                max_concurrent_downloads: bound,
                ..PullerConfig::default()
            },
        )
        .expect("puller");
        // In flight: from the first progress event (permit held) to LayerDownloaded.
        let state = Arc::new(Mutex::new((0usize, 0usize)));
        let s = state.clone();
        let progress: ProgressFn = Arc::new(move |e: &PullEvent| {
            let mut st = s.lock().expect("state");
            match e {
                PullEvent::LayerProgress { done: 0, .. } => {
                    st.0 += 1;
                    st.1 = st.1.max(st.0);
                }
                PullEvent::LayerDownloaded { .. } => st.0 -= 1,
                _ => {}
            }
        });
        // Two pulls of the same image at once share the bound.
        let options = insecure();
        let (a, b) = rt.block_on(async {
            tokio::join!(
                puller.pull(&r, &options, Some(progress.clone())),
                puller.pull(&r, &options, Some(progress.clone()))
            )
        });
        let (a, b) = (a.expect("pull a"), b.expect("pull b"));
        assert_eq!(a.digest, b.digest);
        let max = state.lock().expect("state").1;
        assert!(
            max >= 1 && max <= bound,
            "bound {bound}, saw {max} in flight"
        );
    }
}
