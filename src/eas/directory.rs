//! The address book devices search (GAL, ResolveRecipients): the users the store knows.
//! The embedded store lists its accounts; an external IMAP store has no directory here.

use crate::app::App;

use super::error::EasError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub login: String,
    pub display_name: String,
    pub email: String,
    pub aliases: Vec<String>,
}

impl Entry {
    fn matches(&self, q: &str) -> bool {
        let q = q.to_lowercase();
        self.display_name.to_lowercase().contains(&q)
            || self.email.to_lowercase().contains(&q)
            || self.login.to_lowercase().contains(&q)
            || self.aliases.iter().any(|a| a.to_lowercase().contains(&q))
    }

    /// An exact match on an address or the login.
    pub fn is(&self, q: &str) -> bool {
        let q = q.trim();
        self.email.eq_ignore_ascii_case(q) || self.login.eq_ignore_ascii_case(q) || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(q))
    }

    pub fn first_name(&self) -> Option<&str> {
        self.display_name.split_whitespace().next()
    }

    pub fn last_name(&self) -> Option<&str> {
        let mut words = self.display_name.split_whitespace();
        words.next()?;
        words.last()
    }
}

pub async fn entries(app: &App) -> Result<Vec<Entry>, EasError> {
    let Some(store) = &app.embedded else { return Ok(Vec::new()) };
    Ok(store
        .directory()
        .await?
        .into_iter()
        .map(|u| Entry {
            display_name: u.display_name.clone().unwrap_or_else(|| u.login.clone()),
            login: u.login,
            email: u.email,
            aliases: u.aliases,
        })
        .collect())
}

/// Entries matching free text (at least 1 character), best first: exact, then prefix, then
/// substring matches, each by display name.
pub fn search<'a>(entries: &'a [Entry], query: &str) -> Vec<&'a Entry> {
    let q = query.trim();
    if q.is_empty() {
        return Vec::new();
    }
    let mut hits: Vec<&Entry> = entries.iter().filter(|e| e.matches(q)).collect();
    let lower = q.to_lowercase();
    hits.sort_by_key(|e| (!e.is(q), !e.display_name.to_lowercase().starts_with(&lower), e.display_name.to_lowercase()));
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(login: &str, name: &str) -> Entry {
        Entry { login: login.into(), display_name: name.into(), email: format!("{login}@example.test"), aliases: vec![] }
    }

    #[test]
    fn ranks_exact_then_prefix() {
        let e = vec![entry("bob", "Bob Builder"), entry("robert", "Robert Bobson"), entry("carol", "Carol King")];
        let hits: Vec<&str> = search(&e, "bob").iter().map(|e| e.login.as_str()).collect();
        assert_eq!(hits, ["bob", "robert"]);
        assert!(search(&e, " ").is_empty());
        assert_eq!(e[2].first_name(), Some("Carol"));
        assert_eq!(e[2].last_name(), Some("King"));
    }
}
