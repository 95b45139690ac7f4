//! Search (MS-ASCMD 2.2.1.16) of the Mailbox store (And/Or, FreeText, DateReceived ranges,
//! CollectionId, DeepTraversal, Range) and of the GAL (the directory).

use std::collections::HashSet;

use super::directory;
use super::dispatch::{Ctx, Request};
use super::email::{self, RenderOptions};
use super::error::{CommandResponse, EasError};
use super::folders::{FolderMap, server_id};
use super::status::{SearchStatus, SearchStoreStatus};
use crate::store::{FolderId, Mailbox, SearchHit, SearchQuery, SpecialUse};
use crate::wbxml::{Element, tag};

/// Deepest And/Or nesting and most alternatives a query may expand to.
const MAX_DEPTH: usize = 8;
const MAX_ALTERNATIVES: usize = 16;
/// Most results one search may compute.
const MAX_RESULTS: usize = 1000;

/// One conjunction of conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    pub collections: Vec<String>,
    pub text: Option<String>,
    pub after: Option<i64>,
    pub before: Option<i64>,
    /// False when the query asks for a class other than Email: matches nothing.
    pub email: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Malformed (Store status 2).
    Invalid(String),
    /// More than this server evaluates (Store status 8).
    TooComplex,
}

fn and(a: &Criteria, b: &Criteria) -> Criteria {
    let text = match (&a.text, &b.text) {
        (Some(x), Some(y)) => Some(format!("{x} {y}")),
        (x, y) => x.clone().or(y.clone()),
    };
    let collections = match (a.collections.is_empty(), b.collections.is_empty()) {
        (true, _) => b.collections.clone(),
        (_, true) => a.collections.clone(),
        // Both restrict: only collections in both.
        _ => {
            a.collections.iter().filter(|c| b.collections.contains(c)).cloned().chain(std::iter::once(String::from("\u{0}none"))).collect()
        }
    };
    Criteria {
        collections,
        text,
        after: a.after.max(b.after),
        before: match (a.before, b.before) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
        email: a.email && b.email,
    }
}

/// Evaluates a Query (or And/Or) element into alternatives (disjunctive normal form).
pub fn evaluate(e: &Element, depth: usize) -> Result<Vec<Criteria>, QueryError> {
    if depth > MAX_DEPTH {
        return Err(QueryError::TooComplex);
    }
    let unit = || Criteria { email: true, ..Default::default() };
    let combine_and = |parts: Vec<Vec<Criteria>>| -> Result<Vec<Criteria>, QueryError> {
        let mut acc = vec![unit()];
        for alternatives in parts {
            let mut next = Vec::new();
            for a in &acc {
                for b in &alternatives {
                    next.push(and(a, b));
                }
            }
            if next.len() > MAX_ALTERNATIVES {
                return Err(QueryError::TooComplex);
            }
            acc = next;
        }
        Ok(acc)
    };
    match e.tag {
        t if t == tag::search::QUERY || t == tag::search::AND || t == tag::find::QUERY => {
            let parts = e.elements().map(|c| evaluate(c, depth + 1)).collect::<Result<Vec<_>, _>>()?;
            combine_and(parts)
        }
        t if t == tag::search::OR => {
            let mut out = Vec::new();
            for c in e.elements() {
                out.extend(evaluate(c, depth + 1)?);
            }
            if out.len() > MAX_ALTERNATIVES {
                return Err(QueryError::TooComplex);
            }
            Ok(out)
        }
        t if t == tag::search::FREE_TEXT || t == tag::find::FREE_TEXT => {
            let text = e.text_content().unwrap_or_default();
            Ok(vec![Criteria { text: Some(text.trim().chars().take(256).collect()), ..unit() }])
        }
        t if t == tag::air_sync::CLASS => {
            let class = e.text_content().unwrap_or_default();
            Ok(vec![Criteria { email: class.trim().eq_ignore_ascii_case("Email"), ..unit() }])
        }
        t if t == tag::air_sync::COLLECTION_ID => {
            Ok(vec![Criteria { collections: vec![e.text_content().unwrap_or_default().trim().to_string()], ..unit() }])
        }
        t if t == tag::search::GREATER_THAN || t == tag::search::LESS_THAN => {
            if e.child(tag::email::DATE_RECEIVED).is_none() {
                return Err(QueryError::TooComplex);
            }
            let value = e
                .child_text(tag::search::VALUE)
                .and_then(|v| email::parse_eas_date(&v))
                .ok_or_else(|| QueryError::Invalid("bad date value".into()))?;
            Ok(vec![if t == tag::search::GREATER_THAN {
                Criteria { after: Some(value), ..unit() }
            } else {
                Criteria { before: Some(value), ..unit() }
            }])
        }
        other => Err(QueryError::Invalid(format!("unsupported query element {other}"))),
    }
}

/// Parses `first-last`; default 0-99.
pub fn range(e: Option<String>) -> Result<(usize, usize), QueryError> {
    let Some(r) = e else { return Ok((0, 99)) };
    let (a, b) = r.trim().split_once('-').ok_or_else(|| QueryError::Invalid("bad Range".into()))?;
    let (a, b): (usize, usize) = (
        a.trim().parse().map_err(|_| QueryError::Invalid("bad Range".into()))?,
        b.trim().parse().map_err(|_| QueryError::Invalid("bad Range".into()))?,
    );
    if a > b || b >= MAX_RESULTS {
        return Err(QueryError::Invalid("Range out of bounds".into()));
    }
    Ok((a, b))
}

/// Runs the alternatives against the mailbox; hits newest first, without duplicates.
pub async fn run_mailbox_search(
    map: &FolderMap,
    mailbox: &dyn Mailbox,
    alternatives: &[Criteria],
    deep: bool,
) -> Result<Vec<(String, SearchHit)>, EasError> {
    let mut hits: Vec<(String, SearchHit)> = Vec::new();
    let mut seen = HashSet::new();
    for c in alternatives.iter().filter(|c| c.email) {
        let mut folders: Vec<FolderId> = Vec::new();
        for id in &c.collections {
            if let Some(f) = map.by_collection(id) {
                folders.push(f.id.clone());
                if deep {
                    // Descendants too.
                    let mut frontier = vec![f.id.clone()];
                    while let Some(p) = frontier.pop() {
                        for (_, child) in map.iter().filter(|(_, x)| x.parent.as_ref() == Some(&p)) {
                            folders.push(child.id.clone());
                            frontier.push(child.id.clone());
                        }
                    }
                }
            }
        }
        if !c.collections.is_empty() && folders.is_empty() {
            continue; // only unknown collections: nothing matches
        }
        if folders.is_empty() {
            // No folder given: every mail folder but the bins.
            folders = map
                .iter()
                .filter(|(_, f)| !matches!(f.role, Some(SpecialUse::Trash) | Some(SpecialUse::Junk)))
                .map(|(_, f)| f.id.clone())
                .collect();
        }
        let query = SearchQuery {
            folders,
            text: c.text.clone().filter(|t| !t.is_empty()),
            received_after: c.after,
            received_before: c.before,
            limit: MAX_RESULTS,
        };
        for hit in mailbox.search(&query).await? {
            if seen.insert((hit.folder.clone(), hit.uid))
                && let Some(collection) = map.collection_of(&hit.folder)
            {
                hits.push((collection.clone(), hit));
            }
        }
    }
    hits.sort_by_key(|h| std::cmp::Reverse(h.1.internal_date));
    hits.truncate(MAX_RESULTS);
    Ok(hits)
}

fn store_status(status: SearchStoreStatus) -> Element {
    Element::new(tag::search::STORE).with_text(tag::search::STATUS, status.code().to_string())
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("Search needs a body".into()))?;
    let store = doc.child(tag::search::STORE).ok_or_else(|| EasError::Protocol("Search without Store".into()))?;
    let name = store.child_text(tag::search::NAME).unwrap_or_default();
    let options = store.child(tag::search::OPTIONS);
    let store_out = match name.trim().to_ascii_lowercase().as_str() {
        "mailbox" => mailbox_search(ctx, store, options).await?,
        "gal" => gal_search(ctx, store, options).await?,
        _ => store_status(SearchStoreStatus::InvalidRequest),
    };
    let root = Element::new(tag::search::SEARCH)
        .with_text(tag::search::STATUS, SearchStatus::Success.code().to_string())
        .with(Element::new(tag::search::RESPONSE).with(store_out));
    Ok(CommandResponse::Wbxml(root))
}

async fn mailbox_search(ctx: &Ctx<'_>, store: &Element, options: Option<&Element>) -> Result<Element, EasError> {
    let Some(query) = store.child(tag::search::QUERY) else { return Ok(store_status(SearchStoreStatus::InvalidRequest)) };
    let alternatives = match evaluate(query, 0) {
        Ok(a) => a,
        Err(QueryError::TooComplex) => return Ok(store_status(SearchStoreStatus::TooComplex)),
        Err(QueryError::Invalid(m)) => {
            tracing::info!(reason = %m, "invalid search");
            return Ok(store_status(SearchStoreStatus::InvalidRequest));
        }
    };
    let (first, last) = match range(options.and_then(|o| o.child_text(tag::search::RANGE))) {
        Ok(r) => r,
        Err(_) => return Ok(store_status(SearchStoreStatus::InvalidRequest)),
    };
    let deep = options.is_some_and(|o| o.child(tag::search::DEEP_TRAVERSAL).is_some());
    let map = ctx.folders().await?;
    let mailbox = ctx.mailbox().await?;
    let hits = run_mailbox_search(&map, mailbox.as_ref(), &alternatives, deep).await?;
    let preferences = options.map(email::body_preferences).unwrap_or_default();
    let mut out = store_status(SearchStoreStatus::Success);
    let page: Vec<&(String, SearchHit)> = hits.iter().skip(first).take(last - first + 1).collect();
    if page.is_empty() {
        out.push(Element::new(tag::search::RESULT));
    }
    for (collection, hit) in &page {
        let Some(state) = mailbox.message_states(&hit.folder, &[hit.uid]).await?.into_iter().next() else { continue };
        let Ok(raw) = mailbox.fetch(&hit.folder, hit.uid).await else { continue };
        let render = RenderOptions {
            preferences: preferences.clone(),
            mime_support: 0,
            version: ctx.version(),
            collection: collection.clone(),
            draft_folder: false,
        };
        let mut props = Element::new(tag::search::PROPERTIES);
        email::fill(&mut props, &raw, &state, hit.uid, &render);
        out.push(
            Element::new(tag::search::RESULT)
                .with_text(tag::air_sync::CLASS, "Email")
                .with_text(tag::search::LONG_ID, server_id(collection, hit.uid))
                .with_text(tag::air_sync::COLLECTION_ID, collection.clone())
                .with(props),
        );
    }
    if !page.is_empty() {
        out.push_text_child(tag::search::RANGE, format!("{}-{}", first, first + page.len() - 1));
    }
    out.push_text_child(tag::search::TOTAL, hits.len().to_string());
    Ok(out)
}

async fn gal_search(ctx: &Ctx<'_>, store: &Element, options: Option<&Element>) -> Result<Element, EasError> {
    let query = store.child_text(tag::search::QUERY).unwrap_or_default();
    let (first, last) = match range(options.and_then(|o| o.child_text(tag::search::RANGE))) {
        Ok(r) => r,
        Err(_) => return Ok(store_status(SearchStoreStatus::InvalidRequest)),
    };
    let entries = directory::entries(ctx.app).await?;
    let hits = directory::search(&entries, &query);
    let mut out = store_status(SearchStoreStatus::Success);
    let page: Vec<&&directory::Entry> = hits.iter().skip(first).take(last - first + 1).collect();
    for e in &page {
        out.push(Element::new(tag::search::RESULT).with(gal_properties(tag::search::PROPERTIES, e)));
    }
    if page.is_empty() {
        out.push(Element::new(tag::search::RESULT));
    } else {
        out.push_text_child(tag::search::RANGE, format!("{}-{}", first, first + page.len() - 1));
    }
    out.push_text_child(tag::search::TOTAL, hits.len().to_string());
    Ok(out)
}

/// A directory entry as GAL properties.
pub fn gal_properties(container: crate::wbxml::Tag, e: &directory::Entry) -> Element {
    let mut p = Element::new(container)
        .with_text(tag::gal::DISPLAY_NAME, e.display_name.clone())
        .with_text(tag::gal::EMAIL_ADDRESS, e.email.clone())
        .with_text(tag::gal::ALIAS, e.login.clone());
    if let Some(f) = e.first_name() {
        p.push_text_child(tag::gal::FIRST_NAME, f);
    }
    if let Some(l) = e.last_name() {
        p.push_text_child(tag::gal::LAST_NAME, l);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_alternatives() {
        let q = Element::new(tag::search::QUERY).with(
            Element::new(tag::search::AND)
                .with_text(tag::air_sync::CLASS, "Email")
                .with_text(tag::air_sync::COLLECTION_ID, "5")
                .with_text(tag::search::FREE_TEXT, "lunch")
                .with(
                    Element::new(tag::search::GREATER_THAN)
                        .with(Element::new(tag::email::DATE_RECEIVED))
                        .with_text(tag::search::VALUE, "2026-01-01T00:00:00.000Z"),
                ),
        );
        let a = evaluate(&q, 0).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].collections, vec!["5"]);
        assert_eq!(a[0].text.as_deref(), Some("lunch"));
        assert!(a[0].after.is_some() && a[0].email);

        let or = Element::new(tag::search::QUERY)
            .with(Element::new(tag::search::OR).with_text(tag::search::FREE_TEXT, "a").with_text(tag::search::FREE_TEXT, "b"));
        assert_eq!(evaluate(&or, 0).unwrap().len(), 2);
        let contacts = Element::new(tag::search::QUERY).with_text(tag::air_sync::CLASS, "Contacts");
        assert!(!evaluate(&contacts, 0).unwrap()[0].email);
        let weird = Element::new(tag::search::QUERY).with(Element::new(tag::search::EQUAL_TO));
        assert!(evaluate(&weird, 0).is_err());
        let mut deep = Element::new(tag::search::AND);
        for _ in 0..12 {
            deep = Element::new(tag::search::AND).with(deep);
        }
        assert_eq!(evaluate(&deep, 0), Err(QueryError::TooComplex));
    }

    #[test]
    fn ranges() {
        assert_eq!(range(None), Ok((0, 99)));
        assert_eq!(range(Some("10-19".into())), Ok((10, 19)));
        assert!(range(Some("5-1".into())).is_err());
        assert!(range(Some("0-5000".into())).is_err());
    }
}
