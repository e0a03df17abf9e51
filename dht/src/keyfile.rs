//! Identity key files (wire-spec §3.3): one 32-byte seed, hex in a small text file, mode 0600.
//!
//! ```text
//! suprnova-identity-v1
//! <64 hex digits>
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::identity::Identity;

/// First line of a key file.
pub const HEADER: &str = "suprnova-identity-v1";

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a key file of this format.
    #[error("{0}: not a suprnova identity file (expected '{HEADER}' and 64 hex digits)")]
    Format(PathBuf),
    /// Group or others may read it.
    #[error("{path}: permissions {mode:o} are too open; run: chmod 600 {path}")]
    Permissions {
        /// File.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.to_path_buf(), source }
}

/// Loads an identity; refuses files readable by group or others.
pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io_err(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions { path: path.to_path_buf(), mode: mode & 0o777 });
        }
    }
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(KeyFileError::Format(path.to_path_buf()));
    }
    let mut seed = [0u8; 32];
    let hexline = lines.next().unwrap_or("").trim();
    hex::decode_to_slice(hexline, &mut seed).map_err(|_| KeyFileError::Format(path.to_path_buf()))?;
    Ok(Identity::from_seed(seed))
}

/// Saves an identity atomically (temporary file + rename), created with mode 0600.
pub fn save(path: &Path, identity: &Identity) -> Result<(), KeyFileError> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    writeln!(f, "{HEADER}\n{}", hex::encode(identity.seed())).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Loads the identity at `path`, or creates one with `seed` and saves it there.
pub fn load_or_create(path: &Path, seed: impl FnOnce() -> [u8; 32]) -> Result<(Identity, bool), KeyFileError> {
    if path.exists() {
        return Ok((load(path)?, false));
    }
    let id = Identity::from_seed(seed());
    save(path, &id)?;
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("suprnova-keyfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn identity_survives_restart_with_0600() {
        let d = tmpdir("restart");
        let p = d.join("identity.key");
        let (a, created) = load_or_create(&p, || [5; 32]).unwrap();
        assert!(created);
        let (b, created) = load_or_create(&p, || [6; 32]).unwrap();
        assert!(!created);
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(load(&p), Err(KeyFileError::Permissions { .. })));
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn garbage_is_a_format_error() {
        let d = tmpdir("garbage");
        let p = d.join("identity.key");
        save(&p, &Identity::from_seed([1; 32])).unwrap();
        fs::write(&p, "hello\n").unwrap();
        assert!(matches!(load(&p), Err(KeyFileError::Format(_))));
        fs::remove_dir_all(&d).unwrap();
    }
}
