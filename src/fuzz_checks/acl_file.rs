//! Target `acl_file`: arbitrary text as a Mosquitto ACL file; the last line is also used as a topic and a
//! filter to check against the rules, for a user and an anonymous client. Parsing and every check must
//! never panic.

use std::path::Path;

use crate::auth::{AclFile, AclSubject};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = AclFile::parse(text, Path::new("fuzz.acl")) else { return };
    let probe = text.lines().last().unwrap_or("a/b");
    for topic in [probe, "a/b", "$SYS/x", "u/c/x", ""] {
        for subject in
            [AclSubject { username: Some("u"), client_id: "c" }, AclSubject { username: None, client_id: "c" }]
        {
            let _ = file.may_publish(subject, topic);
            let _ = file.may_receive(subject, topic);
            let _ = file.may_subscribe(subject, topic);
        }
    }
}
