//! ActiveSync protocol versions pushsync speaks.

use std::fmt;

/// A protocol version from `MS-ASProtocolVersion` (or the base64 query's version byte).
/// Ordered, so version-dependent behaviour reads `if v >= ProtocolVersion::V14_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    V12_0,
    V12_1,
    V14_0,
    V14_1,
    V16_0,
    V16_1,
}

impl ProtocolVersion {
    pub const ALL: [ProtocolVersion; 6] = [
        ProtocolVersion::V12_0,
        ProtocolVersion::V12_1,
        ProtocolVersion::V14_0,
        ProtocolVersion::V14_1,
        ProtocolVersion::V16_0,
        ProtocolVersion::V16_1,
    ];

    /// The value of the `MS-ASProtocolVersions` header.
    pub const SUPPORTED_LIST: &'static str = "12.0,12.1,14.0,14.1,16.0,16.1";

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V12_0 => "12.0",
            ProtocolVersion::V12_1 => "12.1",
            ProtocolVersion::V14_0 => "14.0",
            ProtocolVersion::V14_1 => "14.1",
            ProtocolVersion::V16_0 => "16.0",
            ProtocolVersion::V16_1 => "16.1",
        }
    }

    /// Parses the header form, `"14.1"`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s.trim())
    }

    /// Parses the base64 query's byte form, `141` for 14.1.
    pub fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_byte() == b)
    }

    pub fn as_byte(self) -> u8 {
        match self {
            ProtocolVersion::V12_0 => 120,
            ProtocolVersion::V12_1 => 121,
            ProtocolVersion::V14_0 => 140,
            ProtocolVersion::V14_1 => 141,
            ProtocolVersion::V16_0 => 160,
            ProtocolVersion::V16_1 => 161,
        }
    }

    /// 14.0 introduced status codes in the body (the common 1xx statuses) where older
    /// versions used HTTP status codes (449 to provision, 403 for a refused user).
    pub fn has_common_statuses(self) -> bool {
        self >= ProtocolVersion::V14_0
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_orders() {
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::parse(v.as_str()), Some(v));
            assert_eq!(ProtocolVersion::from_byte(v.as_byte()), Some(v));
        }
        assert_eq!(ProtocolVersion::parse("2.5"), None);
        assert_eq!(ProtocolVersion::from_byte(25), None);
        assert!(ProtocolVersion::V12_1 < ProtocolVersion::V14_0);
        let listed: Vec<&str> = ProtocolVersion::SUPPORTED_LIST.split(',').collect();
        assert_eq!(listed, ProtocolVersion::ALL.map(|v| v.as_str()));
    }
}
