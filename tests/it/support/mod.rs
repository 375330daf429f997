//! Test harness: starts and stops real servers on loopback.
pub mod bind;
pub mod pdns;
pub mod pg;
pub mod rig;
pub mod smtp;
pub mod sshd;
