//! The machine lifecycle state machine (PLATFORM.md §2.6). Only legal transitions exist:
//! every change of a machine's state anywhere in Hangar goes through [`State::apply`].

use std::fmt;

use hangar_api_types::MachineState;
use thiserror::Error;

/// A machine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Being created (transient).
    Creating,
    /// Created, never started (`skip_launch`).
    Created,
    /// Booting (transient).
    Starting,
    /// Running.
    Started,
    /// Stopping (transient).
    Stopping,
    /// Stopped.
    Stopped,
    /// Being frozen (transient).
    Suspending,
    /// Frozen in place.
    Suspended,
    /// Restarting after an exit or on request (transient).
    Restarting,
    /// Taking a new config (transient).
    Updating,
    /// Being replaced by a new version (transient).
    Replacing,
    /// Being destroyed (transient).
    Destroying,
    /// Gone (terminal).
    Destroyed,
    /// An old version, superseded by an update (terminal).
    Replaced,
    /// Could not start.
    Failed,
    /// Creation failed; becomes destroyed (transient).
    LaunchFailed,
}

/// Persistent, transient or terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Stays until someone acts.
    Persistent,
    /// On the way to a persistent or terminal state.
    Transient,
    /// Never changes again.
    Terminal,
}

/// Something that happens to a machine: a user request or a runtime report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Creation finished; the machine boots unless `skip_launch`.
    Created {
        /// Stay `created` instead of booting.
        skip_launch: bool,
    },
    /// Creation failed.
    CreateFailed,
    /// User: start.
    Start,
    /// Runtime: the main process runs.
    Running,
    /// Runtime: the process could not be started.
    StartFailed,
    /// User: stop.
    Stop,
    /// Runtime: the process is gone after a stop (or a suspended machine was discarded).
    Halted,
    /// Runtime: the process exited on its own; `restart` is the policy's decision.
    Exited {
        /// Whether the restart policy restarts it.
        restart: bool,
    },
    /// User: suspend.
    Suspend,
    /// Runtime: frozen.
    Frozen,
    /// User: restart.
    Restart,
    /// User: update the config.
    Update,
    /// The new config is in place; `launch` boots it, else it stays stopped.
    Updated {
        /// Boot the new version.
        launch: bool,
    },
    /// User: destroy (`force` kills a running machine first).
    Destroy {
        /// Kill it even if it runs.
        force: bool,
    },
    /// Everything of the machine is removed from the host.
    Removed,
}

/// An action that is not legal in the machine's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("machine is {from}; can not {action}")]
pub struct IllegalTransition {
    /// The state the machine is in.
    pub from: State,
    /// What was attempted.
    pub action: Action,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created { .. } => "finish creating",
            Action::CreateFailed => "fail creating",
            Action::Start => "start",
            Action::Running => "report running",
            Action::StartFailed => "report a failed start",
            Action::Stop => "stop",
            Action::Halted => "report stopped",
            Action::Exited { .. } => "report an exit",
            Action::Suspend => "suspend",
            Action::Frozen => "report suspended",
            Action::Restart => "restart",
            Action::Update => "update",
            Action::Updated { .. } => "finish updating",
            Action::Destroy { force: false } => "destroy (stop it first or use force)",
            Action::Destroy { force: true } => "destroy",
            Action::Removed => "finish destroying",
        })
    }
}

impl State {
    /// Every state, for exhaustive tests.
    pub const ALL: [State; 16] = [
        State::Creating,
        State::Created,
        State::Starting,
        State::Started,
        State::Stopping,
        State::Stopped,
        State::Suspending,
        State::Suspended,
        State::Restarting,
        State::Updating,
        State::Replacing,
        State::Destroying,
        State::Destroyed,
        State::Replaced,
        State::Failed,
        State::LaunchFailed,
    ];

    /// The state's phase.
    pub fn phase(self) -> Phase {
        use State::*;
        match self {
            Created | Started | Stopped | Suspended | Failed => Phase::Persistent,
            Destroyed | Replaced => Phase::Terminal,
            Creating | Starting | Stopping | Suspending | Restarting | Updating | Replacing
            | Destroying | LaunchFailed => Phase::Transient,
        }
    }

    /// The next state after `action`, or why it is not allowed.
    pub fn apply(self, action: Action) -> Result<State, IllegalTransition> {
        use Action as A;
        use State::*;
        let next = match (self, action) {
            (Creating, A::Created { skip_launch: true }) => Created,
            (Creating, A::Created { skip_launch: false }) => Starting,
            (Creating, A::CreateFailed) => LaunchFailed,
            (LaunchFailed, A::Removed) => Destroyed,

            (Created | Stopped | Suspended | Failed, A::Start) => Starting,
            (Starting | Restarting, A::Running) => Started,
            (Starting | Restarting, A::StartFailed) => Failed,
            // A process that dies while starting is an exit like any other.
            (Starting | Started | Restarting, A::Exited { restart: true }) => Restarting,
            (Starting | Started | Restarting, A::Exited { restart: false }) => Stopped,

            (Starting | Started | Restarting | Suspending | Suspended, A::Stop) => Stopping,
            (Stopping, A::Halted) => Stopped,
            // An exit while stopping is the stop completing.
            (Stopping, A::Exited { .. }) => Stopped,

            (Started, A::Suspend) => Suspending,
            (Suspending, A::Frozen) => Suspended,
            (Suspending, A::Exited { .. }) => Stopped,

            (Started, A::Restart) => Restarting,

            (Created | Started | Stopped | Suspended | Failed, A::Update) => Updating,
            (Updating, A::Updated { launch: true }) => Starting,
            (Updating, A::Updated { launch: false }) => Stopped,

            (Created | Stopped | Suspended | Failed, A::Destroy { .. }) => Destroying,
            (
                Starting | Started | Restarting | Stopping | Suspending | Updating,
                A::Destroy { force: true },
            ) => Destroying,
            (Destroying, A::Removed) => Destroyed,
            // A repeated destroy (e.g. after a daemon restart) continues the one under way.
            (Destroying, A::Destroy { .. }) => Destroying,
            // Runtime reports racing a destroy change nothing.
            (Destroying, A::Exited { .. } | A::Halted | A::Running) => Destroying,
            _ => return Err(IllegalTransition { from: self, action }),
        };
        Ok(next)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        use State::*;
        match self {
            Creating => "creating",
            Created => "created",
            Starting => "starting",
            Started => "started",
            Stopping => "stopping",
            Stopped => "stopped",
            Suspending => "suspending",
            Suspended => "suspended",
            Restarting => "restarting",
            Updating => "updating",
            Replacing => "replacing",
            Destroying => "destroying",
            Destroyed => "destroyed",
            Replaced => "replaced",
            Failed => "failed",
            LaunchFailed => "launch_failed",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The Machines API value.
    pub fn to_api(self) -> MachineState {
        self.as_str().parse().unwrap_or_default()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
