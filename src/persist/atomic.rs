//! Atomic file replacement: readers of the target see the old file or the new one, never a
//! partly written mix, even if the process dies or the machine loses power mid-write.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix and suffix of our temporary files: `.dynlib-XXXXXXXXXX.tmp`. Short whatever the
/// target's name (a 255-byte file name must still be writable), and recognisable, so that
/// files orphaned by a killed process can be cleaned up by a later write.
const TMP_PREFIX: &str = ".dynlib-";
const TMP_SUFFIX: &str = ".tmp";
const TMP_RANDOM_LEN: usize = 10;

/// A temporary file of ours older than this is taken to be orphaned by a killed process (a
/// write that is still running renames its file within seconds) and removed by the next write
/// in its directory.
pub const STALE_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Writes `bytes` to `path`, replacing any existing file atomically.
///
/// The bytes go to a temporary file named `.dynlib-<random>.tmp` in the target's directory (so
/// the final rename stays within one file system), which is flushed and synced to disk, then
/// renamed over the target; finally the directory is synced so the rename itself is durable
/// (best effort, Unix only). The new file gets the permissions `File::create` would give it
/// (`0o666` less the umask), not those of a file it replaces.
///
/// Targets: a missing file is created; a regular file is replaced. A symbolic link is
/// followed — the file it points to (which must be regular, or not exist yet) is replaced
/// atomically and the link itself stays. Anything else — a directory, FIFO, device node or
/// socket — is refused with an [`Io`](crate::error::ErrorKind::Io) error before anything is
/// written: replacing it by a regular file would silently break whatever uses it.
///
/// Temporary files of ours older than [`STALE_TMP_AGE`] in the directory (left by a process
/// killed mid-write) are removed first, best effort.
///
/// No directories are created: a missing parent is an [`Io`](crate::error::ErrorKind::Io)
/// error. On any error the temporary file is removed and an existing target is left untouched.
/// Error messages name `path` and the operating system's error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path;
    let fail = |what: &str, e: std::io::Error| {
        Error::io(format!("cannot write '{}': {what}: {e}", shown.display()))
    };
    if path.file_name().is_none() {
        return Err(Error::invalid(format!(
            "cannot write '{}': the path does not name a file",
            path.display()
        )));
    }
    let target = resolve_target(path)?;
    // `Path::parent` is "" for a bare file name, meaning the current directory.
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    remove_stale_temporaries(dir, STALE_TMP_AGE);

    let mut builder = tempfile::Builder::new();
    builder
        .prefix(TMP_PREFIX)
        .suffix(TMP_SUFFIX)
        .rand_bytes(TMP_RANDOM_LEN);
    // NamedTempFile defaults to 0o600; a snapshot should be as readable as any created file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // From here on every early return drops `tmp`, and dropping a NamedTempFile deletes it.
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| fail("creating a temporary file in its directory failed", e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.flush())
        .map_err(|e| fail("writing the temporary file failed", e))?;
    // Data must be on disk before the rename publishes it, or a crash could leave an empty or
    // partial file under the target name.
    tmp.as_file()
        .sync_all()
        .map_err(|e| fail("syncing the temporary file failed", e))?;
    // On failure the PersistError owns the temporary file; dropping it with the error deletes it.
    tmp.persist(&target)
        .map_err(|e| fail("renaming the temporary file over it failed", e.error))?;
    sync_dir(dir);
    Ok(())
}

/// The file a write to `path` replaces: `path` itself unless it is a symbolic link, whose
/// chain is followed. Refuses targets that are not regular files.
fn resolve_target(path: &Path) -> Result<PathBuf> {
    let refuse = |p: &Path, what: &str| {
        let via = if p == path {
            String::new()
        } else {
            format!(" (the link leads to '{}')", p.display())
        };
        Err(Error::io(format!(
            "cannot write '{}': it is {what}, not a regular file{via}; only regular files are \
             replaced",
            path.display()
        )))
    };
    let mut current = path.to_path_buf();
    // Linux follows at most 40 links; so do we.
    for _ in 0..=40 {
        let md = match std::fs::symlink_metadata(&current) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(current),
            Err(e) => {
                return Err(Error::io(format!(
                    "cannot write '{}': {e}",
                    current.display()
                )))
            }
        };
        let ft = md.file_type();
        if ft.is_file() {
            return Ok(current);
        }
        if ft.is_symlink() {
            let link = std::fs::read_link(&current).map_err(|e| {
                Error::io(format!(
                    "cannot write '{}': reading the link '{}' failed: {e}",
                    path.display(),
                    current.display()
                ))
            })?;
            current = match current.parent() {
                Some(parent) if link.is_relative() => parent.join(link),
                _ => link,
            };
            continue;
        }
        if ft.is_dir() {
            return refuse(&current, "a directory");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                return refuse(&current, "a FIFO");
            }
            if ft.is_block_device() || ft.is_char_device() {
                return refuse(&current, "a device node");
            }
            if ft.is_socket() {
                return refuse(&current, "a socket");
            }
        }
        return refuse(&current, "a special file");
    }
    Err(Error::io(format!(
        "cannot write '{}': too many levels of symbolic links",
        path.display()
    )))
}

/// Whether `name` is one of our temporary files.
fn is_our_temporary(name: &str) -> bool {
    name.strip_prefix(TMP_PREFIX)
        .and_then(|rest| rest.strip_suffix(TMP_SUFFIX))
        .is_some_and(|r| r.len() == TMP_RANDOM_LEN && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Removes our temporary files in `dir` last modified more than `age` ago (best effort: a
/// directory that cannot be listed, or a file that cannot be removed, is left alone).
/// Returns how many were removed.
pub fn remove_stale_temporaries(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_our_temporary) {
            continue;
        }
        // symlink_metadata: never follow a link someone named like our files.
        let Ok(md) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let old = md
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d >= age);
        if md.is_file() && old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Syncs a directory so a rename in it survives a crash. Best effort: the file's data is
/// already durable, and some file systems refuse to sync directories (EINVAL) — there is
/// nothing useful to do about that, and the write itself did succeed.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::fs::File;

    /// Names of the entries in `dir`, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_then_replaces_leaving_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.npz");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        write_atomic(&path, b"").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(entries(dir.path()), ["snap.npz"]);
    }

    #[cfg(unix)]
    #[test]
    fn new_file_is_not_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.npz");
        write_atomic(&path, b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        // Owner read/write always; group/other bits depend on the umask, but the temporary
        // file's 0o600 would be wrong if the umask grants more (the usual 0o022 does).
        assert_eq!(mode & 0o600, 0o600);
        let probe = dir.path().join("probe");
        File::create(&probe).unwrap();
        let created = std::fs::metadata(&probe).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, created & 0o777);
    }

    #[test]
    fn missing_directory_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("snap.npz");
        let err = write_atomic(&path, b"data").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains(&path.display().to_string()), "{err}");
        assert!(err.message().contains("os error"), "{err}");
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[test]
    fn a_directory_target_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("snap.npz");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"keep").unwrap();
        let err = write_atomic(&target, b"data").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains("it is a directory"), "{err}");
        assert_eq!(entries(dir.path()), ["snap.npz"]);
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"keep");
    }

    #[test]
    fn temporary_names_are_ours_and_short() {
        assert!(is_our_temporary(".dynlib-aZ09bcdefg.tmp"));
        for name in [
            ".dynlib-short.tmp",
            ".snap.npz.tmpAbc123",
            "dynlib-aZ09bcdefg.tmp",
        ] {
            assert!(!is_our_temporary(name), "{name}");
        }
    }

    #[test]
    fn path_without_a_file_name_is_refused() {
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[cfg(unix)]
    #[test]
    fn read_only_directory_fails_without_leaving_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("snap.npz");
        std::fs::write(&target, b"old").unwrap();
        let set_mode = |mode| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set_mode(0o555);
        // Root (or CAP_DAC_OVERRIDE) ignores directory permissions; detect that by trying.
        let probe = dir.path().join("probe");
        if File::create(&probe).is_ok() {
            std::fs::remove_file(&probe).unwrap();
            set_mode(0o755);
            println!("skipped: running with privileges that ignore directory permissions");
            return;
        }
        let result = write_atomic(&target, b"new");
        set_mode(0o755);
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(
            err.message().contains(&target.display().to_string()),
            "{err}"
        );
        assert_eq!(entries(dir.path()), ["snap.npz"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
    }
}
