//! Writing a file that a running broker (or a reload) may read at any moment: the bytes go to a
//! temporary file in the same directory, are synced, and the temporary is renamed over the old file, so a
//! reader sees the old file or the new one, never half of one. The directory is synced after the rename,
//! so once this returns the new file survives a kill -9 or a power loss (callers acknowledge the change
//! after it: the token API's answer, the dynamic-security command's response).

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Permissions of the file written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileMode {
    /// An existing file keeps its permissions; a new one is 0600.
    KeepExisting,
    /// Always 0600 (the file holds secrets' hashes that no other user needs).
    OwnerOnly,
}

/// Replaces `path` with `bytes` through a synced temporary file and a rename.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], mode: FileMode) -> io::Result<()> {
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let mode = match mode {
        FileMode::KeepExisting => std::fs::metadata(path).map(|meta| meta.permissions().mode()).unwrap_or(0o600),
        FileMode::OwnerOnly => 0o600,
    };
    let result = (|| {
        // A temporary left by an earlier process with the same id (a crash mid-write).
        let _ = std::fs::remove_file(&temp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(mode & 0o7777);
        let mut out = options.open(&temp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename is an entry in the directory: without this a power loss may bring the old file back.
        let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(directory)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
