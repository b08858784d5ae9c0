//! Mosquitto's password file, read and written unchanged: one `user:hash` per line, where the hash is
//! Mosquitto 2's `$7$ITERATIONS$SALT$HASH` (PBKDF2-HMAC-SHA512) or the older `$6$SALT$HASH` (SHA-512 over
//! the password then the salt), salt and hash in standard base64. Blank lines and `#` comments are kept
//! as they are when the file is rewritten (`shardmq passwd`). Parse errors name the file and line.

use std::fmt;
use std::path::{Path, PathBuf};

use super::replace_file::{replace_file, FileMode};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations of new hashes: Mosquitto 2's default (`mosquitto_passwd`).
pub const PBKDF2_ITERATIONS: u32 = 101;
/// Salt bytes of new hashes (Mosquitto's).
pub const SALT_BYTES: usize = 12;
/// SHA-512 output, the hash length of both formats.
const HASH_BYTES: usize = 64;
/// A bound on the iterations a file may ask for, so a hostile file cannot make each CONNECT cost seconds.
pub(crate) const PBKDF2_ITERATIONS_MAX: u32 = 1_000_000;

/// Why a password file cannot be used; each names the file (and line) so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read password file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write password file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    Parse { path: PathBuf, line: usize, reason: String },
}

/// A stored password hash, in one of Mosquitto's two formats.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations (Mosquitto 2's default).
    Pbkdf2Sha512 { iterations: u32, salt: Vec<u8>, hash: [u8; HASH_BYTES] },
    /// `$6$`: SHA-512(password || salt) (Mosquitto 1.6 and earlier).
    Sha512 { salt: Vec<u8>, hash: [u8; HASH_BYTES] },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "Pbkdf2Sha512 {{ iterations: {iterations}, .. }}")
            }
            PasswordHash::Sha512 { .. } => f.write_str("Sha512 { .. }"),
        }
    }
}

impl PasswordHash {
    /// A new `$7$` hash with a fresh random salt and Mosquitto's default iterations. Panics only when the
    /// operating system has no random source.
    pub fn new_pbkdf2(password: &[u8]) -> PasswordHash {
        let mut salt = vec![0u8; SALT_BYTES];
        getrandom::fill(&mut salt).expect("the OS random source works (password salt)");
        PasswordHash::pbkdf2_with(password, salt, PBKDF2_ITERATIONS)
    }

    pub fn pbkdf2_with(password: &[u8], salt: Vec<u8>, iterations: u32) -> PasswordHash {
        let hash = pbkdf2_sha512(password, &salt, iterations);
        PasswordHash::Pbkdf2Sha512 { iterations, salt, hash }
    }

    pub fn sha512_with(password: &[u8], salt: Vec<u8>) -> PasswordHash {
        let hash = sha512_salted(password, &salt);
        PasswordHash::Sha512 { salt, hash }
    }

    /// Whether `password` is the one hashed; the comparison takes the same time wherever the hashes differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        let (computed, stored) = match self {
            PasswordHash::Pbkdf2Sha512 { iterations, salt, hash } => (pbkdf2_sha512(password, salt, *iterations), hash),
            PasswordHash::Sha512 { salt, hash } => (sha512_salted(password, salt), hash),
        };
        computed.ct_eq(stored).into()
    }

    /// Parses the part after `user:`.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let decode =
            |field: &str, what: &str| BASE64.decode(field).map_err(|err| format!("{what} is not base64 ({err})"));
        let to_hash = |bytes: Vec<u8>| -> Result<[u8; HASH_BYTES], String> {
            <[u8; HASH_BYTES]>::try_from(bytes.as_slice())
                .map_err(|_| format!("hash is {} bytes, expected {HASH_BYTES}", bytes.len()))
        };
        let fields: Vec<&str> = text.split('$').collect();
        match fields.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 =
                    iterations.parse().map_err(|_| format!("iteration count `{iterations}` is not a number"))?;
                if !(1..=PBKDF2_ITERATIONS_MAX).contains(&iterations) {
                    return Err(format!("iteration count {iterations} is not between 1 and {PBKDF2_ITERATIONS_MAX}"));
                }
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt: decode(salt, "salt")?,
                    hash: to_hash(decode(hash, "hash")?)?,
                })
            }
            ["", "6", salt, hash] => {
                Ok(PasswordHash::Sha512 { salt: decode(salt, "salt")?, hash: to_hash(decode(hash, "hash")?)? })
            }
            _ => Err("password hash is not `$7$ITERATIONS$SALT$HASH` or `$6$SALT$HASH`".into()),
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The file form (`$7$101$salt$hash`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, salt, hash } => {
                write!(f, "$7${iterations}${}${}", BASE64.encode(salt), BASE64.encode(hash))
            }
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", BASE64.encode(salt), BASE64.encode(hash))
            }
        }
    }
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_BYTES] {
    let mut out = [0u8; HASH_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

fn sha512_salted(password: &[u8], salt: &[u8]) -> [u8; HASH_BYTES] {
    let mut hasher = Sha512::new();
    hasher.update(password);
    hasher.update(salt);
    hasher.finalize().into()
}

/// One line of the file, kept so a rewrite changes only the entries it touches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Entry {
        user: String,
        hash: PasswordHash,
    },
    /// A blank line or a comment, written back verbatim.
    Other(String),
}

/// A whole password file: entries in file order plus the blank and comment lines between them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordFile {
    lines: Vec<Line>,
}

impl PasswordFile {
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PasswordFileError::Read { path: path.to_path_buf(), source })?;
        PasswordFile::parse(&text, path)
    }

    /// Parses file text; `path` is only for error messages.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswordFileError> {
        PasswordFile::parse_entries(text, path, "hash", |_, hash| PasswordHash::parse(hash.trim_end()))
    }

    /// Reads a file of `user:plaintext` lines (`shardmq passwd -U`) and hashes each password ($7$).
    /// Unlike `mosquitto_passwd -U`, an entry that already holds a valid hash is kept as it is (hashing a
    /// hash would lock the user out); their user names are returned so the caller can say so.
    pub fn parse_plaintext(text: &str, path: &Path) -> Result<(PasswordFile, Vec<String>), PasswordFileError> {
        let mut already_hashed = Vec::new();
        let file = PasswordFile::parse_entries(text, path, "password", |user, password| {
            Ok(match PasswordHash::parse(password) {
                Ok(hash) => {
                    already_hashed.push(user.to_string());
                    hash
                }
                Err(_) => PasswordHash::new_pbkdf2(password.as_bytes()),
            })
        })?;
        Ok((file, already_hashed))
    }

    /// The line structure both file kinds share: blank lines and `#` comments kept, `user:VALUE` entries
    /// with a non-empty, unique user, each VALUE turned into a hash by `entry` (an `Err` is the line's
    /// error). `value_name` names VALUE in the error for a line without `:`.
    fn parse_entries(
        text: &str,
        path: &Path,
        value_name: &str,
        mut entry: impl FnMut(&str, &str) -> Result<PasswordHash, String>,
    ) -> Result<PasswordFile, PasswordFileError> {
        let mut file = PasswordFile::default();
        for (index, raw) in text.lines().enumerate() {
            let error = |reason: String| PasswordFileError::Parse { path: path.to_path_buf(), line: index + 1, reason };
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                file.lines.push(Line::Other(line.to_string()));
                continue;
            }
            let (user, value) = line.split_once(':').ok_or_else(|| error(format!("expected `user:{value_name}`")))?;
            if user.is_empty() {
                return Err(error("empty user name".into()));
            }
            if file.find(user).is_some() {
                return Err(error(format!("user `{user}` appears twice")));
            }
            let hash = entry(user, value).map_err(error)?;
            file.lines.push(Line::Entry { user: user.to_string(), hash });
        }
        Ok(file)
    }

    /// The hash stored for `user`.
    pub fn find(&self, user: &str) -> Option<&PasswordHash> {
        self.lines.iter().find_map(|line| match line {
            Line::Entry { user: name, hash } if name == user => Some(hash),
            _ => None,
        })
    }

    /// Whether `user` is listed with this password.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.find(user).is_some_and(|hash| hash.verify(password))
    }

    /// Sets `user`'s hash: replaces it in place, or appends a new entry.
    pub fn set(&mut self, user: &str, hash: PasswordHash) {
        for line in &mut self.lines {
            if let Line::Entry { user: name, hash: stored } = line {
                if name == user {
                    *stored = hash;
                    return;
                }
            }
        }
        self.lines.push(Line::Entry { user: user.to_string(), hash });
    }

    /// Removes `user`; whether it was there.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|line| !matches!(line, Line::Entry { user: name, .. } if name == user));
        self.lines.len() != before
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|line| match line {
            Line::Entry { user, .. } => Some(user.as_str()),
            Line::Other(_) => None,
        })
    }

    /// The file text, one line each, every line ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Entry { user, hash } => text.push_str(&format!("{user}:{hash}\n")),
                Line::Other(other) => {
                    text.push_str(other);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// Writes the file through a temporary file in the same directory and a rename, so a reader (a broker
    /// reloading) never sees half a file. An existing file keeps its permissions; a new one is 0600.
    pub fn write(&self, path: &Path) -> Result<(), PasswordFileError> {
        let write_error = |source| PasswordFileError::Write { path: path.to_path_buf(), source };
        replace_file(path, self.to_text().as_bytes(), FileMode::KeepExisting).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        PasswordFile::parse(text, Path::new("pw"))
    }

    /// Made by Debian's `mosquitto_passwd -c -b pw alice secret` (Mosquitto 2.0.11).
    const MOSQUITTO_ALICE: &str = "alice:$7$101$NQwVkfe6rS+C62Ip$r0n2W+fwijDbW9JZb3iOS7ZTHfZRqa1RcEAQGzp6ACKDOPFSWSdwC3geCZoaSnYrRD4Pm2UbOk8Z0X++fDyZTA==";
    /// Made by `mosquitto_passwd -H sha512 -b pw old oldpw`.
    const MOSQUITTO_SHA512: &str = "old:$6$c+C0lMW+GYONsPsk$4gEfhUHtkBTPgWiO2k1O8X8AsSW2tI6e52rvDsL+bYd3kcOh2u1r3iiH1coKLNC48JVWM/ZVArAh9m6XzXuCsw==";

    #[test]
    fn hashes_written_by_mosquitto_passwd_verify() {
        let file = parse(&format!("{MOSQUITTO_ALICE}\n{MOSQUITTO_SHA512}\n")).expect("parses");
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"Secret"));
        assert!(file.verify("old", b"oldpw"));
        assert!(!file.verify("old", b"oldpw "));
        assert!(!file.verify("bob", b"secret"), "unknown user");
    }

    #[test]
    fn new_hashes_use_mosquitto_defaults_and_round_trip() {
        let hash = PasswordHash::new_pbkdf2(b"pw");
        let text = hash.to_string();
        assert!(text.starts_with("$7$101$"), "{text}");
        let fields: Vec<&str> = text.split('$').collect();
        assert_eq!(BASE64.decode(fields[3]).unwrap().len(), SALT_BYTES);
        assert_eq!(BASE64.decode(fields[4]).unwrap().len(), HASH_BYTES);
        assert_eq!(PasswordHash::parse(&text).unwrap(), hash);
        assert!(hash.verify(b"pw") && !hash.verify(b"pw2"));
    }

    #[test]
    fn comments_and_blank_lines_are_kept_on_rewrite() {
        let text = format!("# users\n\n{MOSQUITTO_ALICE}\n  # indented comment\n{MOSQUITTO_SHA512}\n");
        let mut file = parse(&text).unwrap();
        assert_eq!(file.to_text(), text);
        file.set("carol", PasswordHash::new_pbkdf2(b"c"));
        assert!(file.remove("old"));
        assert!(!file.remove("old"));
        let again = parse(&file.to_text()).unwrap();
        assert_eq!(again.users().collect::<Vec<_>>(), ["alice", "carol"]);
        assert!(again.to_text().starts_with("# users\n\nalice:"));
        assert!(again.verify("carol", b"c"));
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let cases = [
            ("alice:$7$101$c2FsdA==$aGFzaA==\n", "hash is 4 bytes"),
            ("# c\nnocolon\n", "expected `user:hash`"),
            ("alice:plaintext\n", "not `$7$"),
            ("alice:$7$x$c2FsdA==$aGFzaA==\n", "not a number"),
            ("alice:$7$0$c2FsdA==$aGFzaA==\n", "between 1 and"),
            (":$6$c2FsdA==$aGFzaA==\n", "empty user name"),
            ("a:$6$!!!$aGFzaA==\n", "salt is not base64"),
        ];
        for (text, reason) in cases {
            let err = parse(text).unwrap_err().to_string();
            let line = if text.starts_with('#') { 2 } else { 1 };
            assert!(err.starts_with(&format!("pw:{line}: ")), "{err}");
            assert!(err.contains(reason), "{text:?}: {err}");
        }
        let twice = format!("{MOSQUITTO_ALICE}\n{MOSQUITTO_ALICE}\n");
        assert!(parse(&twice).unwrap_err().to_string().starts_with("pw:2: user `alice` appears twice"));
    }

    #[test]
    fn plaintext_files_are_hashed_and_existing_hashes_kept() {
        let text = format!("# plain\nu1:plain1\nu2:with:colon\n{MOSQUITTO_ALICE}\n");
        let (file, kept) = PasswordFile::parse_plaintext(&text, Path::new("pw")).unwrap();
        assert_eq!(kept, ["alice"]);
        let again = parse(&file.to_text()).unwrap();
        assert!(again.verify("u1", b"plain1") && again.verify("u2", b"with:colon") && again.verify("alice", b"secret"));
        assert!(again.to_text().starts_with("# plain\nu1:$7$101$"));
    }

    #[test]
    fn crlf_line_ends_are_accepted() {
        let file = parse(&format!("{MOSQUITTO_ALICE}\r\n")).unwrap();
        assert!(file.verify("alice", b"secret"));
    }

    #[test]
    fn debug_output_shows_no_hash_or_salt() {
        let hash = PasswordHash::sha512_with(b"pw", b"salt".to_vec());
        let shown = format!("{hash:?}");
        assert!(!shown.contains(&BASE64.encode(b"salt")), "{shown}");
    }

    #[test]
    fn write_replaces_the_file_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shardmq-pwfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        let mut file = PasswordFile::default();
        file.set("alice", PasswordHash::new_pbkdf2(b"a"));
        file.write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "new files are private");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        file.set("bob", PasswordHash::new_pbkdf2(b"b"));
        file.write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert!(PasswordFile::load(&path).unwrap().verify("bob", b"b"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
