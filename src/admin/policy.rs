//! Device policies: the settings of MS-ASPROV's EASProvisionDoc, as administrators name and
//! assign them and as Provision sends them.

use serde::{Deserialize, Serialize};

use crate::wbxml::{Element, Tag};

/// Declares the policy struct once: field, type, EASProvisionDoc element, default.
macro_rules! policy {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $element:literal, $default:expr; )*) => {
        /// One named device policy. Booleans are sent as 0/1; `None` numbers as an empty
        /// element (no limit).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct DevicePolicy {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl Default for DevicePolicy {
            fn default() -> Self {
                DevicePolicy { $( $field: $default, )* }
            }
        }

        impl DevicePolicy {
            /// The EASProvisionDoc element with every setting, in specification order.
            pub fn provision_doc(&self) -> Element {
                let mut doc = Element::new(tag("EASProvisionDoc"));
                $( push(&mut doc, $element, PolicyValue::from(&self.$field)); )*
                doc
            }
        }
    };
}

policy! {
    /// A device password (PIN) is required.
    device_password_enabled: bool = "DevicePasswordEnabled", false;
    alphanumeric_device_password_required: bool = "AlphanumericDevicePasswordRequired", false;
    password_recovery_enabled: bool = "PasswordRecoveryEnabled", false;
    require_storage_card_encryption: bool = "RequireStorageCardEncryption", false;
    attachments_enabled: bool = "AttachmentsEnabled", true;
    min_device_password_length: Option<u32> = "MinDevicePasswordLength", None;
    /// Seconds of inactivity before the device locks.
    max_inactivity_time_device_lock: Option<u32> = "MaxInactivityTimeDeviceLock", None;
    /// Failed unlock attempts before the device wipes itself.
    max_device_password_failed_attempts: Option<u32> = "MaxDevicePasswordFailedAttempts", None;
    /// Bytes.
    max_attachment_size: Option<u32> = "MaxAttachmentSize", None;
    allow_simple_device_password: bool = "AllowSimpleDevicePassword", true;
    /// Days.
    device_password_expiration: Option<u32> = "DevicePasswordExpiration", None;
    device_password_history: u32 = "DevicePasswordHistory", 0;
    allow_storage_card: bool = "AllowStorageCard", true;
    allow_camera: bool = "AllowCamera", true;
    require_device_encryption: bool = "RequireDeviceEncryption", false;
    allow_unsigned_applications: bool = "AllowUnsignedApplications", true;
    allow_unsigned_installation_packages: bool = "AllowUnsignedInstallationPackages", true;
    min_device_password_complex_characters: u32 = "MinDevicePasswordComplexCharacters", 1;
    allow_wifi: bool = "AllowWiFi", true;
    allow_text_messaging: bool = "AllowTextMessaging", true;
    allow_pop_imap_email: bool = "AllowPOPIMAPEmail", true;
    allow_bluetooth: u32 = "AllowBluetooth", 2;
    allow_irda: bool = "AllowIrDA", true;
    require_manual_sync_when_roaming: bool = "RequireManualSyncWhenRoaming", false;
    allow_desktop_sync: bool = "AllowDesktopSync", true;
    max_calendar_age_filter: u32 = "MaxCalendarAgeFilter", 0;
    allow_html_email: bool = "AllowHTMLEmail", true;
    /// FilterType value (0: all).
    max_email_age_filter: u32 = "MaxEmailAgeFilter", 0;
    /// Kilobytes; `None`: no limit.
    max_email_body_truncation_size: Option<u32> = "MaxEmailBodyTruncationSize", None;
    max_email_html_body_truncation_size: Option<u32> = "MaxEmailHTMLBodyTruncationSize", None;
    require_signed_smime_messages: bool = "RequireSignedSMIMEMessages", false;
    require_encrypted_smime_messages: bool = "RequireEncryptedSMIMEMessages", false;
    require_signed_smime_algorithm: u32 = "RequireSignedSMIMEAlgorithm", 0;
    require_encryption_smime_algorithm: u32 = "RequireEncryptionSMIMEAlgorithm", 0;
    allow_smime_encryption_algorithm_negotiation: u32 = "AllowSMIMEEncryptionAlgorithmNegotiation", 2;
    allow_smime_soft_certs: bool = "AllowSMIMESoftCerts", true;
    allow_browser: bool = "AllowBrowser", true;
    allow_consumer_email: bool = "AllowConsumerEmail", true;
    allow_remote_desktop: bool = "AllowRemoteDesktop", true;
    allow_internet_sharing: bool = "AllowInternetSharing", true;
}

enum PolicyValue {
    Bool(bool),
    Number(u32),
    Unlimited,
}

impl From<&bool> for PolicyValue {
    fn from(v: &bool) -> Self {
        PolicyValue::Bool(*v)
    }
}

impl From<&u32> for PolicyValue {
    fn from(v: &u32) -> Self {
        PolicyValue::Number(*v)
    }
}

impl From<&Option<u32>> for PolicyValue {
    fn from(v: &Option<u32>) -> Self {
        v.map_or(PolicyValue::Unlimited, PolicyValue::Number)
    }
}

fn tag(name: &str) -> Tag {
    // Every name used here is in the Provision code page; a unit test checks them all.
    Tag::by_name("Provision", name).unwrap_or(Tag::new(14, 0x05))
}

fn push(doc: &mut Element, element: &str, value: PolicyValue) {
    let t = tag(element);
    match value {
        PolicyValue::Bool(b) => doc.push_text_child(t, if b { "1" } else { "0" }),
        PolicyValue::Number(n) => doc.push_text_child(t, n.to_string()),
        PolicyValue::Unlimited => doc.push(Element::new(t)),
    }
}

impl DevicePolicy {
    /// A short fingerprint of the settings, so a device's provisioned policy can be compared
    /// with the current one.
    pub fn fingerprint(&self) -> u32 {
        use sha2::Digest;
        let json = serde_json::to_vec(self).unwrap_or_default();
        let d = sha2::Sha256::digest(&json);
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// Whether the settings ask the device for anything (a permissive policy does not).
    pub fn is_restrictive(&self) -> bool {
        *self != DevicePolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_a_provision_tag() {
        let doc = DevicePolicy::default().provision_doc();
        assert_eq!(doc.tag.name(), Some("EASProvisionDoc"));
        assert_eq!(doc.elements().count(), 40);
        for e in doc.elements() {
            assert_eq!(e.tag.page(), 14, "{}", e.tag);
            assert!(e.tag.name().is_some());
            assert_ne!(e.tag.name(), Some("Provision"), "an element name did not resolve");
        }
    }

    #[test]
    fn values_render_as_the_spec_wants() {
        let p = DevicePolicy { device_password_enabled: true, min_device_password_length: Some(6), ..Default::default() };
        let doc = p.provision_doc();
        let get = |n: &str| doc.child(Tag::by_name("Provision", n).unwrap()).unwrap().text_content();
        assert_eq!(get("DevicePasswordEnabled").as_deref(), Some("1"));
        assert_eq!(get("MinDevicePasswordLength").as_deref(), Some("6"));
        assert_eq!(get("MaxAttachmentSize"), None, "unlimited is an empty element");
        assert_ne!(p.fingerprint(), DevicePolicy::default().fingerprint());
        assert!(p.is_restrictive() && !DevicePolicy::default().is_restrictive());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<DevicePolicy>(&json).unwrap(), p);
        assert!(serde_json::from_str::<DevicePolicy>("{\"no_such\": 1}").is_err());
    }
}
