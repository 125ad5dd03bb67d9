//! A machine's state transition as the proxy's autostart and the API write it: read the
//! machine, then update it with its event in one transaction (`update_machine_with_event`),
//! on a file-backed store in WAL mode. `cargo bench -p hangar-store --bench write`; the figure
//! goes in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hangar_api_types::MachineConfig;
use hangar_domain::State;
use hangar_store::{AppRecord, EventRecord, MachineRecord, PendingOp, SqliteStore, Store};

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("hangar-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = SqliteStore::open(&dir.join("state.db")).expect("open");
    store.create_org("acme", "Acme", 1).expect("org");
    store
        .create_app(&AppRecord {
            name: "web".into(),
            id: "app1".into(),
            org_slug: "acme".into(),
            network: "default".into(),
            created_at: 1,
        })
        .expect("app");
    store
        .insert_machine(&MachineRecord {
            id: "m1".into(),
            app: "web".into(),
            name: "m1".into(),
            region: "local".into(),
            state: State::Stopped,
            instance_id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            config: MachineConfig {
                image: "registry.local/web:1".into(),
                ..MachineConfig::default()
            },
            image_ref: None,
            private_ip: "fdaa::2".into(),
            host: "h1".into(),
            cordoned: false,
            pending: None,
            restart_count: 0,
            created_at: 10,
            updated_at: 10,
            revision: 0,
        })
        .expect("machine");
    let mut n = 0u64;
    c.bench_function("machine transition (find + update with event)", |b| {
        b.iter(|| {
            n += 1;
            let cur = store.find_machine("m1").expect("find").expect("exists");
            let mut next = cur.clone();
            next.state = if n.is_multiple_of(2) {
                State::Stopped
            } else {
                State::Starting
            };
            next.pending = Some(PendingOp::Start);
            let event = EventRecord {
                id: format!("e{n}"),
                machine_id: "m1".into(),
                kind: "start".into(),
                status: next.state.as_str().into(),
                source: "bench".into(),
                timestamp: n as i64,
                request: None,
            };
            black_box(
                store
                    .update_machine_with_event(&next, cur.revision, &event)
                    .expect("write"),
            );
        })
    });
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
