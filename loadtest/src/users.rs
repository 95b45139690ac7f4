//! Test accounts: generated (`lt-user-00001`, ...) and created through the admin API on the
//! embedded store, or read from a users file (`login:password` per line) for a store the
//! tool cannot create accounts in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::admin::Admin;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCred {
    /// Position in the run's user list (0-based): what events and the tracker use.
    pub index: u32,
    pub login: String,
    pub password: String,
    /// Where messages for this user are delivered (LMTP `RCPT TO`, admin API `to`).
    pub address: String,
}

fn address_of(login: &str, domain: &str) -> String {
    if login.contains('@') { login.to_string() } else { format!("{login}@{domain}") }
}

/// `count` users named `{prefix}00001`... sharing one password.
pub fn generated(count: usize, prefix: &str, password: &str, domain: &str) -> Vec<UserCred> {
    (0..count)
        .map(|i| {
            let login = format!("{prefix}{:05}", i + 1);
            UserCred { index: i as u32, address: address_of(&login, domain), login, password: password.to_string() }
        })
        .collect()
}

/// Parses a users file: `login:password` per line (the password may contain `:`); blank
/// lines and lines starting with `#` are skipped. At most `limit` users when given.
pub fn parse_users_file(text: &str, domain: &str, limit: Option<usize>) -> anyhow::Result<Vec<UserCred>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((login, password)) = line.split_once(':') else { bail!("line {}: expected login:password", n + 1) };
        let login = login.trim();
        if login.is_empty() || password.is_empty() {
            bail!("line {}: empty login or password", n + 1);
        }
        out.push(UserCred {
            index: out.len() as u32,
            address: address_of(login, domain),
            login: login.to_string(),
            password: password.to_string(),
        });
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    if out.is_empty() {
        bail!("the users file lists no users");
    }
    Ok(out)
}

pub fn read_users_file(path: &std::path::Path, domain: &str, limit: Option<usize>) -> anyhow::Result<Vec<UserCred>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_users_file(&text, domain, limit).with_context(|| format!("in {}", path.display()))
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ensured {
    pub created: usize,
    pub reused: usize,
    pub sync_enabled: usize,
}

/// Creates the users that do not exist yet (`concurrency` at a time: each costs the server an
/// argon2 hash) and enables Mobile Sync where it is not. `progress` is told how many are done.
pub async fn ensure(
    admin: Arc<Admin>,
    users: &[UserCred],
    concurrency: usize,
    progress: impl Fn(usize) + Send + Sync + 'static,
) -> anyhow::Result<Ensured> {
    let existing = admin.list_users().await.context("cannot list users through the admin API")?;
    let (default_enabled, enabled) = admin.sync_access().await?;
    let missing: Vec<UserCred> = users.iter().filter(|u| !existing.contains(&u.login.to_ascii_lowercase())).cloned().collect();
    let to_enable: Vec<String> = if default_enabled {
        Vec::new()
    } else {
        users
            .iter()
            .filter(|u| existing.contains(&u.login.to_ascii_lowercase()) && !enabled.contains(&u.login.to_ascii_lowercase()))
            .map(|u| u.login.clone())
            .collect()
    };
    let mut result = Ensured { created: 0, reused: users.len() - missing.len(), sync_enabled: to_enable.len() };
    for login in &to_enable {
        admin.enable_sync(login).await.with_context(|| format!("cannot enable Mobile Sync for {login}"))?;
    }
    let done = Arc::new(AtomicUsize::new(result.reused));
    progress(result.reused);
    let progress = Arc::new(progress);
    let queue = Arc::new(std::sync::Mutex::new(missing.into_iter()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (admin, queue, done, progress) = (admin.clone(), queue.clone(), done.clone(), progress.clone());
        tasks.spawn(async move {
            let mut created = 0usize;
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(u) = next else { break };
                if admin.add_user(&u.login, &u.address, &u.password).await.with_context(|| format!("cannot create {}", u.login))? {
                    created += 1;
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            }
            Ok::<usize, anyhow::Error>(created)
        });
    }
    while let Some(r) = tasks.join_next().await {
        result.created += r??;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_numbered_from_one() {
        let u = generated(3, "lt-user-", "pw", "loadtest.test");
        assert_eq!(u[0].login, "lt-user-00001");
        assert_eq!(u[2].login, "lt-user-00003");
        assert_eq!(u[2].index, 2);
        assert_eq!(u[0].address, "lt-user-00001@loadtest.test");
    }

    #[test]
    fn users_files_parse() {
        let text = "# test accounts\nalice@example.test:secret\n\nbob:pa:ss\r\ncarol:x\n";
        let u = parse_users_file(text, "example.test", None).unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(
            (u[0].login.as_str(), u[0].password.as_str(), u[0].address.as_str()),
            ("alice@example.test", "secret", "alice@example.test")
        );
        assert_eq!((u[1].login.as_str(), u[1].password.as_str(), u[1].address.as_str()), ("bob", "pa:ss", "bob@example.test"));
        assert_eq!(u[2].index, 2);
        assert_eq!(parse_users_file(text, "example.test", Some(2)).unwrap().len(), 2);
        assert!(parse_users_file("nocolon\n", "x", None).is_err());
        assert!(parse_users_file("# only comments\n", "x", None).is_err());
    }
}
