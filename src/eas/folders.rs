//! Folders as devices see them: collection ids, ActiveSync folder types, parent ids.

use std::sync::Arc;

use crate::state::{CollectionId, KnownFolder, StateStore};
use crate::store::{Folder, FolderId, Mailbox, SpecialUse};

use super::error::EasError;

/// ActiveSync folder types (MS-ASCMD 2.2.3.186.3).
pub mod folder_type {
    pub const USER_GENERIC: u8 = 1;
    pub const INBOX: u8 = 2;
    pub const DRAFTS: u8 = 3;
    pub const DELETED_ITEMS: u8 = 4;
    pub const SENT_ITEMS: u8 = 5;
    pub const OUTBOX: u8 = 6;
    pub const USER_MAIL: u8 = 12;
}

/// The type a folder is announced with.
pub fn eas_type(role: Option<SpecialUse>) -> u8 {
    match role {
        Some(SpecialUse::Inbox) => folder_type::INBOX,
        Some(SpecialUse::Drafts) => folder_type::DRAFTS,
        Some(SpecialUse::Trash) => folder_type::DELETED_ITEMS,
        Some(SpecialUse::Sent) => folder_type::SENT_ITEMS,
        Some(SpecialUse::Junk) | Some(SpecialUse::Archive) | None => folder_type::USER_MAIL,
    }
}

/// A user's folders with their collection ids.
pub struct FolderMap {
    entries: Vec<(CollectionId, Folder)>,
}

impl FolderMap {
    /// Lists the store's folders and assigns collection ids.
    pub async fn load(state: &dyn StateStore, login: &str, mailbox: &Arc<dyn Mailbox>) -> Result<FolderMap, EasError> {
        let folders = mailbox.folders().await?;
        let ids: Vec<FolderId> = folders.iter().map(|f| f.id.clone()).collect();
        let collections = state.collection_ids(login, &ids).await?;
        Ok(FolderMap { entries: collections.into_iter().zip(folders).collect() })
    }

    pub fn by_collection(&self, id: &str) -> Option<&Folder> {
        self.entries.iter().find(|(c, _)| c == id).map(|(_, f)| f)
    }

    pub fn collection_of(&self, folder: &FolderId) -> Option<&CollectionId> {
        self.entries.iter().find(|(_, f)| &f.id == folder).map(|(c, _)| c)
    }

    pub fn with_role(&self, role: SpecialUse) -> Option<(&CollectionId, &Folder)> {
        self.entries.iter().find(|(_, f)| f.role == Some(role)).map(|(c, f)| (c, f))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&CollectionId, &Folder)> {
        self.entries.iter().map(|(c, f)| (c, f))
    }

    /// The hierarchy as FolderSync announces it.
    pub fn known_folders(&self) -> Vec<KnownFolder> {
        self.entries
            .iter()
            .map(|(id, f)| KnownFolder {
                id: id.clone(),
                parent: f.parent.as_ref().and_then(|p| self.collection_of(p)).cloned().unwrap_or_else(|| "0".into()),
                name: f.name.clone(),
                folder_type: eas_type(f.role),
            })
            .collect()
    }
}

/// A message's ServerId: `<collection>:<uid>`.
pub fn server_id(collection: &str, uid: u32) -> String {
    format!("{collection}:{uid}")
}

/// Splits a ServerId into collection and UID.
pub fn parse_server_id(s: &str) -> Option<(&str, u32)> {
    let (c, u) = s.trim().rsplit_once(':')?;
    let uid = u.parse().ok()?;
    (!c.is_empty()).then_some((c, uid))
}

/// The message number of a ServerId that belongs to `collection`; `None` for one of another
/// folder (its number there would name a different message).
pub fn item_uid_in(server_id: &str, collection: &str) -> Option<u32> {
    let (c, uid) = parse_server_id(server_id)?;
    (c == collection).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_round_trip() {
        assert_eq!(parse_server_id(&server_id("12", 345)), Some(("12", 345)));
        assert_eq!(parse_server_id("12"), None);
        assert_eq!(parse_server_id(":5"), None);
        assert_eq!(parse_server_id("1:x"), None);
        assert_eq!(eas_type(Some(SpecialUse::Trash)), folder_type::DELETED_ITEMS);
        assert_eq!(eas_type(None), folder_type::USER_MAIL);
    }
}
