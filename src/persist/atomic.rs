//! Atomic file replacement: readers of the target see the old file or the new one, never a
//! partly written mix, even if the process dies or the machine loses power mid-write.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path`, replacing any existing file atomically.
///
/// The bytes go to a temporary file named `.<file name>.tmp…` in the target's directory (so the
/// final rename stays within one file system), which is flushed and synced to disk, then
/// renamed over `path`; finally the directory is synced so the rename itself is durable (best
/// effort, Unix only). The new file gets the permissions `File::create` would give it
/// (`0o666` less the umask), not those of a file it replaces.
///
/// No directories are created: a missing parent is an [`Io`](crate::error::ErrorKind::Io)
/// error. On any error the temporary file is removed and an existing target is left untouched.
/// Error messages name `path` and the operating system's error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        Error::io(format!("cannot write '{}': {what}: {e}", path.display()))
    };
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid(format!(
            "cannot write '{}': the path does not name a file",
            path.display()
        ))
    })?;
    // `Path::parent` is "" for a bare file name, meaning the current directory.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp");

    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
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
    tmp.persist(path)
        .map_err(|e| fail("renaming the temporary file over it failed", e.error))?;
    sync_dir(dir);
    Ok(())
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
    fn failed_rename_removes_the_temporary_file_and_keeps_the_target() {
        // The target is a non-empty directory: the temporary file is created and written, then
        // the rename fails.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("snap.npz");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"keep").unwrap();
        let err = write_atomic(&target, b"data").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains("renaming"), "{err}");
        assert_eq!(entries(dir.path()), ["snap.npz"]);
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"keep");
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
