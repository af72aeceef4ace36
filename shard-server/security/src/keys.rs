//! API keys: a read-write set and a read-only set, several keys each so that a key can be
//! rotated (add the new one, move clients, remove the old one). Only SHA-256 digests are kept,
//! and a presented key is compared with every stored digest in constant time, so neither the
//! comparison's length nor its position reveals anything about the keys.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::reload::Reloading;

/// Qdrant's header, which its clients send.
pub const API_KEY_HEADER: &str = "api-key";
/// Longest key accepted (in a file or a request).
pub const MAX_KEY_BYTES: usize = 512;
/// The files of a key directory (a mounted Secret with these two keys).
pub const READ_WRITE_FILE: &str = "read-write";
pub const READ_ONLY_FILE: &str = "read-only";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ReadOnly,
    ReadWrite,
}

type Digest32 = [u8; 32];

fn digest(key: &[u8]) -> Digest32 {
    Sha256::digest(key).into()
}

/// The keys in force.
#[derive(Default)]
pub struct KeySet {
    read_write: Vec<Digest32>,
    read_only: Vec<Digest32>,
    /// Sent by the system's own components to each other when they are not told apart by
    /// certificates (a cluster without TLS).
    first_read_write: Option<String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("KeySet")
            .field("read_write", &self.read_write.len())
            .field("read_only", &self.read_only.len())
            .finish()
    }
}

/// Checks one key; the error names where it came from, never the key.
fn check_key(key: &str, source: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "{source}: a key is longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{source}: a key holds a character other than visible ASCII (no spaces): it could not be sent in a header"
        ));
    }
    Ok(())
}

impl KeySet {
    pub fn new(read_write: &[String], read_only: &[String]) -> Result<KeySet, String> {
        for key in read_write {
            check_key(key, "read-write keys")?;
        }
        for key in read_only {
            check_key(key, "read-only keys")?;
        }
        if read_write.iter().any(|k| read_only.contains(k)) {
            return Err("the same key is listed as read-write and as read-only".into());
        }
        if read_write.is_empty() && !read_only.is_empty() {
            return Err(
                "read-only keys without any read-write key: nothing could write; add a read-write key"
                    .into(),
            );
        }
        Ok(KeySet {
            read_write: read_write.iter().map(|k| digest(k.as_bytes())).collect(),
            read_only: read_only.iter().map(|k| digest(k.as_bytes())).collect(),
            first_read_write: read_write.first().cloned(),
        })
    }

    /// The keys of a `read-write` and a `read-only` file (contents; the sources name them in
    /// errors): the read-write file must hold a key.
    pub fn from_files(
        read_write: &[u8],
        read_only: &[u8],
        rw_source: &str,
        ro_source: &str,
    ) -> Result<KeySet, String> {
        let rw = parse_key_file(read_write, rw_source)?;
        let ro = parse_key_file(read_only, ro_source)?;
        if rw.is_empty() {
            return Err(format!("{rw_source} holds no key"));
        }
        KeySet::new(&rw, &ro)
    }

    /// No key at all: requests need none.
    pub fn is_empty(&self) -> bool {
        self.read_write.is_empty()
    }

    pub fn first_read_write(&self) -> Option<&str> {
        self.first_read_write.as_deref()
    }

    /// The role of `key`, looking at every stored digest whatever matches.
    pub fn role_of(&self, key: &[u8]) -> Option<Role> {
        let presented = digest(key);
        let matches = |set: &[Digest32]| {
            set.iter()
                .fold(subtle::Choice::from(0), |any, d| any | d.ct_eq(&presented))
        };
        let (rw, ro) = (matches(&self.read_write), matches(&self.read_only));
        if bool::from(rw) {
            Some(Role::ReadWrite)
        } else if bool::from(ro) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }
}

/// One key per line; blank lines and `#` comments are skipped.
pub fn parse_key_file(text: &[u8], source: &str) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(text).map_err(|_| format!("{source}: not UTF-8 text"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// The key sets in force: fixed, or read from a directory and reloaded when it changes.
#[derive(Clone)]
pub enum ApiKeys {
    Fixed(Arc<KeySet>),
    Reloading(Arc<Reloading<KeySet>>),
}

impl ApiKeys {
    pub fn fixed(set: KeySet) -> ApiKeys {
        ApiKeys::Fixed(Arc::new(set))
    }

    /// Keys from `dir/read-write` and `dir/read-only` (a missing file holds no keys). The
    /// directory must give at least one read-write key: a key directory without keys is
    /// more likely a mistake than a wish to open the server.
    pub fn from_dir(dir: &Path) -> Result<ApiKeys, String> {
        let paths = vec![dir.join(READ_WRITE_FILE), dir.join(READ_ONLY_FILE)];
        let where_rw = paths[0].display().to_string();
        let where_ro = paths[1].display().to_string();
        let keys = Reloading::start("API keys", paths, true, move |files| {
            KeySet::from_files(&files[0], &files[1], &where_rw, &where_ro)
        })?;
        Ok(ApiKeys::Reloading(keys))
    }

    pub fn get(&self) -> Arc<KeySet> {
        match self {
            ApiKeys::Fixed(set) => set.clone(),
            ApiKeys::Reloading(keys) => keys.get(),
        }
    }
}

/// The key a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Missing,
    /// A header is there but cannot hold a key; says why.
    Malformed(&'static str),
    Key(&'a [u8]),
}

/// Reads `api-key` (Qdrant's header) or else `authorization: Bearer <key>`.
pub fn presented(headers: &http::HeaderMap) -> Presented<'_> {
    let key = if let Some(value) = headers.get(API_KEY_HEADER) {
        value.as_bytes()
    } else if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.as_bytes();
        let scheme = b"bearer ";
        if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Presented::Malformed("the authorization header must be `Bearer <key>`");
        }
        value[scheme.len()..].trim_ascii()
    } else {
        return Presented::Missing;
    };
    if key.is_empty() {
        Presented::Malformed("the API key in the request is empty")
    } else if key.len() > MAX_KEY_BYTES {
        Presented::Malformed("the API key in the request is longer than 512 bytes")
    } else {
        Presented::Key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> KeySet {
        KeySet::new(&["rw-old".into(), "rw-new".into()], &["ro-1".into()]).unwrap()
    }

    #[test]
    fn every_listed_key_has_its_role_and_others_none() {
        let keys = set();
        assert_eq!(keys.role_of(b"rw-old"), Some(Role::ReadWrite));
        assert_eq!(keys.role_of(b"rw-new"), Some(Role::ReadWrite));
        assert_eq!(keys.role_of(b"ro-1"), Some(Role::ReadOnly));
        assert_eq!(keys.role_of(b"rw-ol"), None);
        assert_eq!(keys.role_of(b""), None);
        assert_eq!(keys.first_read_write(), Some("rw-old"));
    }

    #[test]
    fn bad_key_lists_are_refused_without_showing_the_key() {
        let err = KeySet::new(&["a b".into()], &[]).unwrap_err();
        assert!(
            err.contains("visible ASCII") && !err.contains("a b"),
            "{err}"
        );
        let err = KeySet::new(&["same".into()], &["same".into()]).unwrap_err();
        assert!(err.contains("read-write and as read-only"), "{err}");
        let err = KeySet::new(&[], &["ro".into()]).unwrap_err();
        assert!(err.contains("without any read-write"), "{err}");
        assert!(KeySet::new(&["k".repeat(513)], &[])
            .unwrap_err()
            .contains("512"));
        assert!(format!("{:?}", set()).contains("read_write: 2"));
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(presented(&h), Presented::Missing);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(presented(&h), Presented::Key(b"abc"));
        h.insert("authorization", "bearer   abc ".parse().unwrap());
        assert_eq!(presented(&h), Presented::Key(b"abc"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(matches!(presented(&h), Presented::Malformed(m) if m.contains("Bearer")));
        h.insert("api-key", "xyz".parse().unwrap());
        assert_eq!(presented(&h), Presented::Key(b"xyz"), "api-key wins");
        h.insert("api-key", "".parse().unwrap());
        assert!(matches!(presented(&h), Presented::Malformed(m) if m.contains("empty")));
        h.insert("api-key", "k".repeat(600).parse().unwrap());
        assert!(matches!(presented(&h), Presented::Malformed(m) if m.contains("512")));
    }

    #[test]
    fn a_key_directory_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(READ_WRITE_FILE),
            "# rotated 2026-12\nold\n\n",
        )
        .unwrap();
        let keys = ApiKeys::from_dir(dir.path()).unwrap();
        assert_eq!(keys.get().role_of(b"old"), Some(Role::ReadWrite));
        assert_eq!(keys.get().role_of(b"ro"), None);
        std::fs::write(dir.path().join(READ_WRITE_FILE), "old\nnew\n").unwrap();
        std::fs::write(dir.path().join(READ_ONLY_FILE), "ro\n").unwrap();
        let ApiKeys::Reloading(reloading) = &keys else {
            unreachable!()
        };
        assert!(reloading.check());
        assert_eq!(keys.get().role_of(b"new"), Some(Role::ReadWrite));
        assert_eq!(keys.get().role_of(b"old"), Some(Role::ReadWrite));
        assert_eq!(keys.get().role_of(b"ro"), Some(Role::ReadOnly));
        // A broken change keeps the keys in force.
        std::fs::write(dir.path().join(READ_WRITE_FILE), "").unwrap();
        assert!(!reloading.check());
        assert_eq!(keys.get().role_of(b"new"), Some(Role::ReadWrite));
        // An empty directory is a startup error.
        let empty = tempfile::tempdir().unwrap();
        let err = ApiKeys::from_dir(empty.path()).err().unwrap();
        assert!(err.contains("holds no key"), "{err}");
    }
}
