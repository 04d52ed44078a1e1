//! The object API's bearer token: random, written next to the store with
//! mode 0600 by `weir run` (so only the user running the controller, and
//! root, can read it), read by the command line.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where `weir run` writes the token for the store at `store`.
pub fn token_file(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".token");
    PathBuf::from(name)
}

/// A fresh token: 32 random bytes, hex.
pub fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Writes `token` to `path`, readable and writable by its owner only; an
/// existing file (a previous run's) is replaced.
pub fn write(path: &Path, token: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(token.as_bytes())
}

/// Whether `given` is `expected`, in time that does not depend on where
/// they first differ.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_private() {
        let a = generate().expect("token");
        assert_eq!(a.len(), 64);
        assert_ne!(a, generate().expect("token"));
        let dir = tempfile::tempdir().expect("dir");
        let path = token_file(&dir.path().join("s.redb"));
        write(&path, &a).expect("write");
        write(&path, &a).expect("rewrite over a previous run's");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches(&a, &a));
        assert!(!matches(&a, &a[..63]));
        assert!(!matches(&a, &generate().expect("token")));
    }
}
