//! Folder-hierarchy sync (FolderSync): what folders the device holds, as Add/Update/Delete
//! deltas under a SyncKey, with the same retry rule as item sync.

use crate::state::{HierarchyState, KnownFolder, PendingHierarchy};

use super::SyncError;

/// Changes to send in a FolderSync response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HierarchyDelta {
    pub key: u32,
    pub adds: Vec<KnownFolder>,
    pub updates: Vec<KnownFolder>,
    pub deletes: Vec<String>,
}

impl HierarchyDelta {
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }
}

/// Differences from `held` to `current`: parents are added before their children.
pub fn diff(held: &[KnownFolder], current: &[KnownFolder]) -> (Vec<KnownFolder>, Vec<KnownFolder>, Vec<String>) {
    let mut adds = Vec::new();
    let mut updates = Vec::new();
    for f in current {
        match held.iter().find(|h| h.id == f.id) {
            None => adds.push(f.clone()),
            Some(h) if h != f => updates.push(f.clone()),
            Some(_) => {}
        }
    }
    let deletes = held.iter().filter(|h| !current.iter().any(|f| f.id == h.id)).map(|h| h.id.clone()).collect();
    (order_parents_first(adds), updates, deletes)
}

fn order_parents_first(mut folders: Vec<KnownFolder>) -> Vec<KnownFolder> {
    let mut out: Vec<KnownFolder> = Vec::with_capacity(folders.len());
    while !folders.is_empty() {
        let before = folders.len();
        let mut i = 0;
        while i < folders.len() {
            let parent = &folders[i].parent;
            if parent == "0" || !folders.iter().any(|f| &f.id == parent) {
                out.push(folders.remove(i));
            } else {
                i += 1;
            }
        }
        if folders.len() == before {
            // A cycle cannot come from a store, but never loop on one.
            out.append(&mut folders);
        }
    }
    out
}

/// Applies a FolderSync request with `key` to `state` given the `current` hierarchy. Returns
/// the delta to send; `state` is updated and must be saved before responding.
pub fn folder_sync(state: &mut HierarchyState, key: &str, current: Vec<KnownFolder>) -> Result<HierarchyDelta, SyncError> {
    let key: u32 = key.trim().parse().map_err(|_| SyncError::InvalidSyncKey)?;
    if key == 0 {
        // Full resend; item sync state is untouched (it is keyed by collection, not by this).
        let new_key = state.key.max(state.pending.as_ref().map_or(0, |p| p.key)) + 1;
        state.key = new_key;
        state.pending = None;
        let adds = order_parents_first(current.clone());
        state.folders = current;
        return Ok(HierarchyDelta { key: new_key, adds, updates: Vec::new(), deletes: Vec::new() });
    }
    match state.pending.take() {
        Some(p) if p.key == key => {
            state.key = p.key;
            state.folders = p.folders;
        }
        Some(_) | None if key == state.key => {}
        _ => return Err(SyncError::InvalidSyncKey),
    }
    let (adds, updates, deletes) = diff(&state.folders, &current);
    if adds.is_empty() && updates.is_empty() && deletes.is_empty() {
        return Ok(HierarchyDelta { key: state.key, ..Default::default() });
    }
    let new_key = state.key + 1;
    state.pending = Some(PendingHierarchy { key: new_key, folders: current });
    Ok(HierarchyDelta { key: new_key, adds, updates, deletes })
}

/// Applies a change the device made itself (FolderCreate/Update/Delete) to its view of the
/// hierarchy: `key` must be current (a pending response it names is confirmed first);
/// returns the new key. Only the device's own change is added to its view, so changes made
/// elsewhere still reach it through FolderSync.
pub fn own_change(state: &mut HierarchyState, key: &str, change: impl FnOnce(&mut Vec<KnownFolder>)) -> Result<u32, SyncError> {
    let key: u32 = key.trim().parse().map_err(|_| SyncError::InvalidSyncKey)?;
    match state.pending.take() {
        Some(p) if p.key == key => {
            state.key = p.key;
            state.folders = p.folders;
        }
        Some(_) | None if key == state.key && key != 0 => {}
        _ => return Err(SyncError::InvalidSyncKey),
    }
    change(&mut state.folders);
    state.key += 1;
    Ok(state.key)
}

/// Whether two hierarchies hold the same folders (in any order).
pub fn same(a: &[KnownFolder], b: &[KnownFolder]) -> bool {
    let (adds, updates, deletes) = diff(a, b);
    adds.is_empty() && updates.is_empty() && deletes.is_empty()
}

/// The hierarchy the device holds, assuming it received the last response.
pub fn effective(state: &HierarchyState) -> &[KnownFolder] {
    state.pending.as_ref().map_or(&state.folders, |p| &p.folders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str, parent: &str, name: &str) -> KnownFolder {
        KnownFolder { id: id.into(), parent: parent.into(), name: name.into(), folder_type: 12 }
    }

    #[test]
    fn bootstrap_then_deltas_with_retry() {
        let mut st = HierarchyState::default();
        let d = folder_sync(&mut st, "0", vec![f("2", "1", "Child"), f("1", "0", "Parent")]).unwrap();
        assert_eq!(d.key, 1);
        assert_eq!(d.adds.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["1", "2"], "parents first");

        // No change: same key, nothing to send.
        let d = folder_sync(&mut st, "1", vec![f("1", "0", "Parent"), f("2", "1", "Child")]).unwrap();
        assert_eq!((d.key, d.is_empty()), (1, true));

        // A rename and a new folder.
        let now = vec![f("1", "0", "Renamed"), f("2", "1", "Child"), f("3", "0", "New")];
        let d = folder_sync(&mut st, "1", now.clone()).unwrap();
        assert_eq!(d.key, 2);
        assert_eq!(d.updates, vec![f("1", "0", "Renamed")]);
        assert_eq!(d.adds, vec![f("3", "0", "New")]);

        // The response was lost: the old key gets the same answer.
        let again = folder_sync(&mut st, "1", now.clone()).unwrap();
        assert_eq!(again, d);

        // The device got it: key 2 confirms, then a delete.
        let d = folder_sync(&mut st, "2", vec![f("1", "0", "Renamed"), f("3", "0", "New")]).unwrap();
        assert_eq!((d.key, d.deletes.clone()), (3, vec!["2".to_string()]));

        assert!(matches!(folder_sync(&mut st, "7", now.clone()), Err(SyncError::InvalidSyncKey)));
        assert!(matches!(folder_sync(&mut st, "x", now), Err(SyncError::InvalidSyncKey)));
    }

    #[test]
    fn key_zero_resends_everything_with_a_fresh_key() {
        let mut st = HierarchyState::default();
        folder_sync(&mut st, "0", vec![f("1", "0", "A")]).unwrap();
        folder_sync(&mut st, "1", vec![f("1", "0", "A"), f("2", "0", "B")]).unwrap();
        let d = folder_sync(&mut st, "0", vec![f("1", "0", "A"), f("2", "0", "B")]).unwrap();
        assert_eq!(d.key, 3, "never reuses a key handed out before");
        assert_eq!(d.adds.len(), 2);
        assert!(st.pending.is_none());
    }
}
