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
//!   SMTP reply texts come from [`crate::policy::Reply`];
//! * `transport.rs`: the listeners and the connection's byte stream;
//! * `slots.rs`: the connection limit and the negotiation deadline;
//! * `peer.rs`: whose connection it is (slots are shared out by peer).

mod callbacks;
mod engine;
mod peer;
mod server;
pub(crate) mod session;
mod slots;
mod transport;

pub(crate) use engine::encryption_slots;
pub use engine::{Engine, EngineError, Process, SHUTDOWN_DEADLINE, Shared, SigningSetup};
pub(crate) use server::start_metrics;
pub use server::{Listening, ServeError, run_on, serve};
pub use session::MAX_HEADER_FIELDS;
pub use transport::{TcpMilterListener, UnixMilterListener};
