//! Test harness: starts and stops real servers on loopback.
pub mod pdns;
