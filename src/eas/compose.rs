//! Building RFC 5322 messages from what a device sends as fields (16.x draft Adds) and the
//! recipient lists the Send commands need.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as BuilderAddress;
use mail_parser::MessageParser;

use crate::store::Account;
use crate::wbxml::{Element, tag};

/// A parsed address: display name and email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub email: String,
}

/// Parses an address list as devices write it (`"Name" <a@x>, b@y; c@z`).
pub fn parse_address_list(s: &str) -> Vec<Mailbox> {
    let header = format!("To: {}\r\n\r\n", s.replace(';', ",").replace(['\r', '\n'], " "));
    let Some(msg) = MessageParser::default().parse(header.as_bytes()) else { return Vec::new() };
    msg.to()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    let email = m.address()?.trim().to_string();
                    email.contains('@').then(|| Mailbox { name: m.name().map(str::to_string).filter(|n| !n.is_empty()), email })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn builder_addresses(list: &[Mailbox]) -> BuilderAddress<'static> {
    BuilderAddress::new_list(list.iter().map(|m| BuilderAddress::new_address(m.name.clone(), m.email.clone())).collect())
}

/// A message id in the sender's domain.
pub fn new_message_id(account: &Account) -> String {
    let domain = account.email.split_once('@').map(|(_, d)| d).unwrap_or("localhost");
    format!("{:032x}@{}", rand::random::<u128>(), domain)
}

/// Builds a draft from a 16.x Sync Add's ApplicationData (To, Cc, Bcc, Subject, Importance,
/// Body). The sender is always the account.
pub fn build_draft(account: &Account, data: &Element) -> Vec<u8> {
    let text = |t| data.child_text(t).unwrap_or_default();
    let mut b = MessageBuilder::new()
        .from(BuilderAddress::new_address(account.display_name.clone(), account.email.clone()))
        .message_id(new_message_id(account))
        .date(chrono::Utc::now().timestamp())
        .subject(text(tag::email::SUBJECT));
    let to = parse_address_list(&text(tag::email::TO));
    if !to.is_empty() {
        b = b.to(builder_addresses(&to));
    }
    let cc = parse_address_list(&text(tag::email::CC));
    if !cc.is_empty() {
        b = b.cc(builder_addresses(&cc));
    }
    let bcc = parse_address_list(&text(tag::email2::BCC));
    if !bcc.is_empty() {
        b = b.bcc(builder_addresses(&bcc));
    }
    match data.child_text(tag::email::IMPORTANCE).as_deref().map(str::trim) {
        Some("2") => b = b.header("Importance", mail_builder::headers::raw::Raw::new("high")),
        Some("0") => b = b.header("Importance", mail_builder::headers::raw::Raw::new("low")),
        _ => {}
    }
    let body = data.child(tag::air_sync_base::BODY);
    let body_text = body.and_then(|b| b.child_text(tag::air_sync_base::DATA)).unwrap_or_default();
    let is_html = body.and_then(|b| b.child_text(tag::air_sync_base::TYPE)).is_some_and(|t| t.trim() == "2");
    b = if is_html { b.html_body(body_text) } else { b.text_body(body_text) };
    b.write_to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn parses_device_address_lists() {
        let l = parse_address_list("\"Bob B\" <bob@example.test>; carol@example.test, not-an-address");
        assert_eq!(
            l,
            vec![
                Mailbox { name: Some("Bob B".into()), email: "bob@example.test".into() },
                Mailbox { name: None, email: "carol@example.test".into() },
            ]
        );
        assert!(parse_address_list("").is_empty());
    }

    #[test]
    fn drafts_are_from_the_account() {
        let account = Account {
            login: Arc::from("alice"),
            email: "alice@example.test".into(),
            display_name: Some("Alice".into()),
            addresses: vec![],
            secret: None,
        };
        let data = Element::new(tag::air_sync::APPLICATION_DATA)
            .with_text(tag::email::TO, "bob@example.test")
            .with_text(tag::email::SUBJECT, "Plan")
            .with(
                Element::new(tag::air_sync_base::BODY)
                    .with_text(tag::air_sync_base::TYPE, "1")
                    .with_text(tag::air_sync_base::DATA, "Draft text"),
            );
        let raw = build_draft(&account, &data);
        let msg = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(msg.subject(), Some("Plan"));
        assert_eq!(msg.from().unwrap().first().unwrap().address(), Some("alice@example.test"));
        assert_eq!(msg.to().unwrap().first().unwrap().address(), Some("bob@example.test"));
        assert!(msg.body_text(0).unwrap().contains("Draft text"));
    }
}
