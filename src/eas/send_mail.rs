//! SendMail, SmartReply and SmartForward (MS-ASCMD 2.2.1.17, .19, .20).

use super::{Command, ProtocolVersion};

/// Whether the request body is a raw MIME message (the 12.x query-parameter form) rather
/// than WBXML.
pub fn takes_raw_mime(command: Command, version: ProtocolVersion, content_type: Option<&str>) -> bool {
    let sending = matches!(command, Command::SendMail | Command::SmartReply | Command::SmartForward);
    let declared_mime = content_type.is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("message/rfc822"));
    sending && (version < ProtocolVersion::V14_0 || declared_mime)
}
