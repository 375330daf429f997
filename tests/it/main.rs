//! One integration test binary: real servers on loopback, the real daemon in-process.
mod sim;
mod support;
