//! Container start latency of the real driver (libcontainer in-process + hangar-init), as root:
//! `cargo bench -p hangar-runtime --bench start`. Figures go in BENCHMARKS.md next to `runc run`
//! of the same busybox bundle (see `benches/runc.sh`).
//!
//! - create+start+exit of `/bin/true`: `create` → `start` → `wait_exit` (delete not timed)
//! - start → first output: a created container's `start` until its first byte is in the log
//!   (polled without forking)
//! - freeze+thaw: one suspend/resume round trip of a running container

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hangar_runtime::Driver;
use hangar_runtime::testing::TestHost;

fn bench(c: &mut Criterion) {
    let host = TestHost::new().expect("test host (root, cgroups, busybox-static)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("runtime");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(10));

    group.bench_function("create+start+exit /bin/true", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let spec = host.spec("bench-true", &["/bin/true"]);
                let t = Instant::now();
                host.driver.create(&spec).expect("create");
                host.driver.start(&spec.id).expect("start");
                let status = rt.block_on(host.driver.wait_exit(&spec.id)).expect("exit");
                total += t.elapsed();
                assert_eq!(black_box(status).code, 0);
                host.driver.delete(&spec.id).expect("delete");
            }
            total
        })
    });

    group.bench_function("start -> first output", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let spec = host.spec("bench-echo", &["echo", "hi"]);
                host.driver.create(&spec).expect("create");
                let t = Instant::now();
                host.driver.start(&spec.id).expect("start");
                while std::fs::metadata(&spec.stdout_log).map_or(0, |m| m.len()) == 0 {
                    std::hint::spin_loop();
                }
                total += t.elapsed();
                host.driver.delete(&spec.id).expect("delete");
            }
            total
        })
    });

    let spec = host.spec("bench-freeze", &["sleep", "1000"]);
    host.driver.create(&spec).expect("create");
    host.driver.start(&spec.id).expect("start");
    group.bench_function("freeze+thaw", |b| {
        b.iter(|| {
            host.driver.freeze(&spec.id).expect("freeze");
            host.driver.thaw(&spec.id).expect("thaw");
        })
    });
    group.finish();
    host.driver.delete(&spec.id).expect("delete");
}

criterion_group!(benches, bench);
criterion_main!(benches);
