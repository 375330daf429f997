//! The steps: one file per family, each a set of functions taking the step context, the
//! migration, the job and the `&Lease` (rust-lang/bors lays out its handlers the same way). The
//! reconcile loop in `engine/mod.rs` dispatches to them; none of them claims or retries.

pub mod announce;
pub mod bounces;
pub mod decommission;
pub mod external;
pub mod lower;
pub mod mail;
pub mod notices;
pub mod repoint;
pub mod restore;
pub mod rollback;
pub mod settle;
pub mod staff;
pub mod transfer;
pub mod verify;
