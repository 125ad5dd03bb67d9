//! Property tests of the machine state machine.

use hangar_domain::{Action, Phase, State};
use proptest::prelude::*;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        any::<bool>().prop_map(|skip_launch| Action::Created { skip_launch }),
        Just(Action::CreateFailed),
        Just(Action::Start),
        Just(Action::Running),
        Just(Action::StartFailed),
        Just(Action::Stop),
        Just(Action::Halted),
        any::<bool>().prop_map(|restart| Action::Exited { restart }),
        Just(Action::Suspend),
        Just(Action::Frozen),
        Just(Action::Restart),
        Just(Action::Update),
        any::<bool>().prop_map(|launch| Action::Updated { launch }),
        any::<bool>().prop_map(|force| Action::Destroy { force }),
        Just(Action::Removed),
    ]
}

proptest! {
    /// Any sequence of actions from `creating` only ever visits states reachable by legal
    /// transitions, terminal states never change, and an illegal action leaves the state alone.
    #[test]
    fn random_histories_stay_legal(actions in proptest::collection::vec(action(), 0..64)) {
        let mut state = State::Creating;
        for a in actions {
            match state.apply(a) {
                Ok(next) => {
                    prop_assert_ne!(state.phase(), Phase::Terminal, "{} moved on {:?}", state, a);
                    state = next;
                }
                Err(e) => prop_assert_eq!(e.from, state),
            }
        }
    }

    /// From any state that is not terminal, destroy (forced) then removal ends in `destroyed`,
    /// unless the machine is still creating.
    #[test]
    fn forced_destroy_always_ends_destroyed(idx in 0usize..State::ALL.len()) {
        let s = State::ALL[idx];
        if s.phase() != Phase::Terminal && s != State::Creating && s != State::LaunchFailed && s != State::Replacing {
            let d = s.apply(Action::Destroy { force: true });
            prop_assert!(d.is_ok(), "{} can not be destroyed", s);
            let d = d.unwrap_or(State::Destroying);
            let end = if d == State::Destroying { d.apply(Action::Removed) } else { Ok(d) };
            prop_assert_eq!(end, Ok(State::Destroyed));
        }
    }
}

#[test]
fn every_transient_state_can_reach_a_resting_state() {
    let all_actions = [
        Action::Created { skip_launch: true },
        Action::Created { skip_launch: false },
        Action::CreateFailed,
        Action::Running,
        Action::StartFailed,
        Action::Halted,
        Action::Exited { restart: false },
        Action::Frozen,
        Action::Updated { launch: false },
        Action::Removed,
    ];
    for s in State::ALL {
        if s.phase() != Phase::Transient || s == State::Replacing {
            continue;
        }
        let mut frontier = vec![s];
        let mut seen = vec![s];
        let mut rests = false;
        while let Some(cur) = frontier.pop() {
            if cur.phase() != Phase::Transient {
                rests = true;
                break;
            }
            for a in all_actions {
                if let Ok(n) = cur.apply(a)
                    && !seen.contains(&n)
                {
                    seen.push(n);
                    frontier.push(n);
                }
            }
        }
        assert!(rests, "{s} has no way to a persistent or terminal state");
    }
}

#[test]
fn the_reference_transitions() {
    use Action as A;
    use State::*;
    let path = [
        (Creating, A::Created { skip_launch: false }, Starting),
        (Starting, A::Running, Started),
        (Started, A::Stop, Stopping),
        (Stopping, A::Halted, Stopped),
        (Stopped, A::Start, Starting),
        (Started, A::Suspend, Suspending),
        (Suspending, A::Frozen, Suspended),
        (Suspended, A::Start, Starting),
        (Suspended, A::Stop, Stopping),
        (Started, A::Exited { restart: true }, Restarting),
        (Restarting, A::Running, Started),
        (Started, A::Exited { restart: false }, Stopped),
        (Started, A::Update, Updating),
        (Updating, A::Updated { launch: true }, Starting),
        (Stopped, A::Destroy { force: false }, Destroying),
        (Destroying, A::Removed, Destroyed),
        (Creating, A::Created { skip_launch: true }, Created),
        (Creating, A::CreateFailed, LaunchFailed),
        (LaunchFailed, A::Removed, Destroyed),
    ];
    for (from, a, to) in path {
        assert_eq!(from.apply(a), Ok(to), "{from} + {a:?}");
    }
    let e = Started
        .apply(A::Destroy { force: false })
        .expect_err("running machine");
    assert_eq!(
        e.to_string(),
        "machine is started; can not destroy (stop it first or use force)"
    );
    assert!(Destroyed.apply(A::Start).is_err());
    for s in State::ALL {
        assert_eq!(State::parse(s.as_str()), Some(s));
        assert_eq!(s.to_api().as_str(), s.as_str());
    }
}
