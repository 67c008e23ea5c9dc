//! Request ids and user names, kept inline: both grammars allow at most
//! 64 ASCII bytes, so a request carries them without an allocation.

use std::fmt;

/// The longest id or user name the grammar allows.
pub const MAX_NAME: usize = 64;

/// 1 to 64 bytes of an id or a user name, already checked against its
/// grammar (ASCII letters, digits and a few punctuation marks).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    len: u8,
    bytes: [u8; MAX_NAME],
}

impl Name {
    /// The id grammar: 1 to 64 of letters, digits, `-`, `_`, `.`, `:`.
    pub fn id(s: &[u8]) -> Option<Name> {
        Name::checked(s, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
        })
    }

    /// The user grammar: 1 to 64 of letters, digits, `-`, `_`, `.`.
    pub fn user(s: &[u8]) -> Option<Name> {
        Name::checked(s, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
        })
    }

    fn checked(s: &[u8], ok: impl Fn(u8) -> bool) -> Option<Name> {
        if s.is_empty() || s.len() > MAX_NAME || !s.iter().all(|&b| ok(b)) {
            return None;
        }
        let mut bytes = [0; MAX_NAME];
        bytes[..s.len()].copy_from_slice(s);
        Some(Name {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes ever get in (see `checked`), so this never fails.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammars() {
        assert_eq!(Name::id(b"a.b:c").map(|n| n.to_string()), Some("a.b:c".into()));
        assert!(Name::user(b"a:b").is_none());
        assert!(Name::user(b"").is_none());
        assert!(Name::user(&[b'x'; 65]).is_none());
        assert_eq!(Name::user(&[b'x'; 64]).map(|n| n.as_bytes().len()), Some(64));
        assert!(Name::id("é".as_bytes()).is_none());
    }
}
