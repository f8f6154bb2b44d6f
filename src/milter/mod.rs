//! The milter service: the engine a connection works with (configuration,
//! policy, key sources), reloading it on request, listening on the
//! configured socket, and stopping gracefully.
//!
//! * `engine.rs`: the [`Engine`] (swapped on reload), the process-wide
//!   [`Process`], and [`Shared`] (both, and the reload);
//! * `server.rs`: binding the socket, [`serve`] with its reload and
//!   shutdown inputs, the drain and its deadline;
//! * `session.rs`: per-connection and per-message state and decisions;
//! * `callbacks.rs`: milter stages → session calls, verdicts → replies.
//!   SMTP reply texts come from [`crate::policy::reply`];
//! * `transport.rs`: the listeners and the connection's byte stream;
//! * `slots.rs`: the connection limit and the negotiation deadline;
//! * `peer.rs`: whose connection it is (slots are shared out by peer).

pub mod callbacks;
pub mod engine;
pub mod peer;
pub mod server;
pub mod session;
pub mod slots;
pub mod transport;

pub use engine::{
    Engine, EngineError, Process, RESTART_KEYS, SHUTDOWN_DEADLINE, Shared, Unapplied,
    encryption_slots,
};
pub use server::{Listening, ServeError, milter_config, run_on, serve, start_metrics};
pub use transport::{TcpMilterListener, UnixMilterListener};
