//! The security suite (issue: hardening): every probe of the independent review replayed
//! against the real binary — secrets on every surface, truncated and hostile upstream
//! bodies, slow and idle connection floods with bounded counts, the state file under
//! concurrent CLI use and SIGKILL, dangerous configurations. One module per threat;
//! `docs/security.md` lists each promise and the test that keeps it.

mod server_limits;
mod state_file;
mod upstream_bodies;
