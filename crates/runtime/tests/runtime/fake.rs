//! The fake driver behaves like the real one at the trait level.

use std::time::Duration;

use hangar_runtime::testing::FakeDriver;
use hangar_runtime::{ContainerId, ContainerSpec, ContainerState, Driver, ExitStatus, Signal};

use crate::rt;

fn spec(id: &str) -> ContainerSpec {
    ContainerSpec::new(
        ContainerId::parse(id).expect("id"),
        "/rootfs".into(),
        vec!["app".into()],
        "/logs/out".into(),
    )
}

#[test]
fn fake_lifecycle() {
    let d = FakeDriver::new();
    let s = spec("f1");
    d.create(&s).expect("create");
    assert!(d.create(&s).is_err());
    assert_eq!(d.state(&s.id).expect("state"), ContainerState::Created);
    d.start(&s.id).expect("start");
    d.freeze(&s.id).expect("freeze");
    assert_eq!(d.state(&s.id).expect("state"), ContainerState::Frozen);
    d.thaw(&s.id).expect("thaw");
    let rt = rt();
    let st = rt
        .block_on(d.stop(&s.id, Signal::INT, Duration::from_secs(1)))
        .expect("stop");
    assert_eq!(st.signal, Some(2));
    assert_eq!(d.signals(&s.id), vec![Signal::INT]);

    let s2 = spec("f2");
    d.create(&s2).expect("create");
    d.start(&s2.id).expect("start");
    d.ignore_signals(&s2.id);
    let st = rt
        .block_on(d.stop(&s2.id, Signal::TERM, Duration::from_millis(10)))
        .expect("stop");
    assert_eq!(st.signal, Some(9));

    let s3 = spec("f3");
    d.create(&s3).expect("create");
    d.start(&s3.id).expect("start");
    let exit = ExitStatus {
        code: 1,
        signal: None,
        oom_killed: true,
    };
    d.exit(&s3.id, exit).expect("exit");
    assert_eq!(rt.block_on(d.wait_exit(&s3.id)).expect("wait"), exit);
    assert_eq!(d.list().expect("list").len(), 3);
    for id in [&s.id, &s2.id, &s3.id] {
        d.delete(id).expect("delete");
    }
    assert!(d.list().expect("list").is_empty());
    d.fail_next_create("boom");
    assert!(d.create(&s).is_err());
}
