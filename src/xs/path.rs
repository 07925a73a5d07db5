//! xenstore paths: validation and canonical form.
//!
//! Characters A-Za-z0-9-/_@; no "//"; no trailing "/" (except "/" itself);
//! not empty. "@..." names are special (watches and permissions only).
//! Relative paths resolve under the connection's home,
//! /local/domain/<domid>/. Limits: 2048 bytes relative, 3072 absolute.

use super::wire::XsError;

/// Longest relative path (XENSTORE_REL_PATH_MAX).
pub const REL_PATH_MAX: usize = 2048;
/// Longest absolute path (XENSTORE_ABS_PATH_MAX).
pub const ABS_PATH_MAX: usize = 3072;

/// A path that is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid xenstore path")]
pub struct PathError;

impl From<PathError> for XsError {
    fn from(_: PathError) -> XsError {
        XsError::EINVAL
    }
}

/// A canonical path: absolute ("/...") or special ("@...").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XsPath(String);

fn valid_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@')
}

/// The home of a domain's relative paths.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

impl XsPath {
    /// Validates `raw` and makes it absolute. `home` is the connection's
    /// domain path; `allow_special` admits "@..." names.
    pub fn parse(raw: &str, home: &str, allow_special: bool) -> Result<(XsPath, bool), PathError> {
        let bytes = raw.as_bytes();
        if bytes.is_empty() || !bytes.iter().all(|b| valid_char(*b)) || raw.contains("//") {
            return Err(PathError);
        }
        if raw.len() > 1 && raw.ends_with('/') {
            return Err(PathError);
        }
        match bytes[0] {
            b'@' if allow_special => Ok((XsPath(raw.to_owned()), false)),
            b'@' => Err(PathError),
            b'/' if raw.len() <= ABS_PATH_MAX => Ok((XsPath(raw.to_owned()), false)),
            b'/' => Err(PathError),
            _ if raw.len() > REL_PATH_MAX => Err(PathError),
            _ => {
                let abs = format!("{home}/{raw}");
                if abs.len() > ABS_PATH_MAX {
                    return Err(PathError);
                }
                Ok((XsPath(abs), true))
            }
        }
    }

    /// A path known to be canonical (xenith's own code).
    pub fn from_canonical(path: impl Into<String>) -> XsPath {
        XsPath(path.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_special(&self) -> bool {
        self.0.starts_with('@')
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for XsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parent of an absolute path ("/" for "/a"; None for "/").
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of a path.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `child` is `parent` or below it.
pub fn is_at_or_below(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return child.starts_with('/');
    }
    child == parent
        || (child.starts_with(parent) && child.as_bytes().get(parent.len()) == Some(&b'/'))
}

/// Number of components below "/" ("/" is 0, "/a/b" is 2).
pub fn depth(path: &str) -> usize {
    if path == "/" {
        0
    } else {
        path.matches('/').count()
    }
}

/// Turns an absolute path back into one relative to `home`, when it is
/// below it (watch events on relative watches carry relative paths).
pub fn relative_to<'a>(path: &'a str, home: &str) -> &'a str {
    match path.strip_prefix(home) {
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_and_canonical_form() {
        let home = "/local/domain/0";
        let ok = |p: &str| XsPath::parse(p, home, false).map(|(x, _)| x.into_string());
        assert_eq!(ok("/"), Ok("/".into()));
        assert_eq!(ok("/a/b-c_d@e"), Ok("/a/b-c_d@e".into()));
        assert_eq!(ok("x/y"), Ok("/local/domain/0/x/y".into()));
        for bad in [
            "",
            "/a//b",
            "/a/",
            "a/",
            "/a b",
            "/a.b",
            "/a\n",
            "@introduceDomain",
        ] {
            assert_eq!(ok(bad), Err(PathError), "{bad:?}");
        }
        assert!(XsPath::parse("@releaseDomain", home, true)
            .unwrap()
            .0
            .is_special());
        assert!(ok(&format!("/{}", "a".repeat(ABS_PATH_MAX))).is_err());
        assert!(ok(&"a".repeat(REL_PATH_MAX + 1)).is_err());
        assert!(ok(&format!("/{}", "a".repeat(ABS_PATH_MAX - 1))).is_ok());
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(basename("/a/b"), "b");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/ab", "/"));
        assert_eq!(depth("/a/b"), 2);
        assert_eq!(relative_to("/local/domain/3/x", "/local/domain/3"), "x");
        assert_eq!(relative_to("/other", "/local/domain/3"), "/other");
    }
}
