//! The ActiveSync protocol: the HTTP request form, status codes, and one module per command
//! that parses its request from the WBXML element tree and builds its response.
//!
//! Commands call the sync engine, the store and the device state through [`crate::server`]'s
//! request context; they never touch sockets. Errors become protocol statuses in exactly one
//! place, [`error`].

pub mod request;
pub mod status;
pub mod version;

pub use request::{CommandParams, RequestLine, RequestLineError};
pub use version::ProtocolVersion;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/commands.rs"));
}

pub use generated::{Command, QUERY_PARAMETERS};
