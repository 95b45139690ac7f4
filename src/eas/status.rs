//! Every ActiveSync status code, generated from `protocol-specs/status-codes.toml`.
//!
//! One enum per Status element of the specification (`SyncStatus`, `PingStatus`, …) plus
//! [`CommonStatus`], the 1xx codes every command may return from protocol 14.0 on.

include!(concat!(env!("OUT_DIR"), "/status_codes.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_specification() {
        assert_eq!(SyncStatus::from_code(3), Some(SyncStatus::InvalidSyncKey));
        assert_eq!(SyncStatus::InvalidSyncKey.code(), 3);
        assert_eq!(CommonStatus::from_code(126).map(|s| s.code()), Some(126));
        assert_eq!(PingStatus::from_code(2).map(|s| s.code()), Some(2));
        assert_eq!(SyncStatus::from_code(999), None);
    }
}
