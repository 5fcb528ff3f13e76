//! Tools for plugin authors: `ferry plugin inspect`, `ferry plugin test` and
//! `ferry plugin new`.
//!
//! `inspect` reads a component and checks it against this host; `harness` runs it in the
//! daemon's sandbox against the `samples`, with the `capture` server as its backend;
//! `scaffold` writes a new plugin project.

pub mod capture;
pub mod harness;
pub mod inspect;
pub mod samples;
pub mod scaffold;
