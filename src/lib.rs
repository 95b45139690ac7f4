//! pushsync: an Exchange ActiveSync gateway that pushes mail to phones the moment it arrives.
//!
//! Map of the components (a request flows top to bottom, a push bottom to top):
//!
//! - [`wbxml`]: sans-I/O WBXML codec and the ActiveSync code pages (from `protocol-specs/`).
//! - [`eas`]: the protocol: request form, statuses, one module per command.
//! - [`store`]: the `MailStore` trait on IMAP's data model, the embedded backend.
//! - [`sqlite`]: SQLite connection handling shared by the stores that use it.

pub mod admin;
pub mod app;
pub mod backup;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod eas;
pub mod locks;
pub mod metrics;
pub mod oof;
pub mod outbound;
pub mod push;
pub mod server;
pub mod sqlite;
pub mod state;
pub mod store;
pub mod sync;
pub mod wbxml;
