//! Target `password_file`: arbitrary text as a Mosquitto password file, hashed (`user:$7$...`) and
//! plaintext (`user:password`, as `mosquitto_passwd -U` takes). Parsing must never panic; a file that parses
//! must write back text that parses to the same file, and looking a user up must not panic. Verification is
//! left out: a `$7$` line may ask for a million PBKDF2 iterations, which is the administrator's choice
//! (bounded by the parser) and only slow.

use std::path::Path;

use crate::auth::PasswordFile;

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.passwd");
    if let Ok(file) = PasswordFile::parse(text, path) {
        let written = file.to_text();
        let again = PasswordFile::parse(&written, path).expect("a written password file parses");
        assert_eq!(again, file, "writing and reading changed the password file");
        for user in file.users() {
            assert!(file.find(user).is_some(), "a listed user is found");
        }
    }
    let _ = PasswordFile::parse_plaintext(text, path);
}
