//! The JSON file of Mosquitto's dynamic security plugin, as `mosquitto_ctrl dynsec init` writes it and
//! as the plugin rewrites it after every change: clients (PBKDF2-SHA512 password hash, salt and
//! iterations in base64), groups, roles with their ACLs, `defaultACLAccess` and `anonymousGroup`.
//!
//! Read leniently (absent lists are empty, `textName` as written by `init` is read like `textname`),
//! written the way the plugin writes it (omitted priorities mean -1, `disabled` only when true), through a
//! temporary file and a rename so a crash never leaves half a file.

use std::path::{Path, PathBuf};

use crate::auth::replace_file::{replace_file, FileMode};
use serde::{Deserialize, Serialize};

/// The priority of a role, group or ACL that names none (Mosquitto's default).
pub const PRIORITY_DEFAULT: i64 = -1;

/// Why the file cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DynsecFileError {
    #[error("cannot read dynamic security file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write dynamic security file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("dynamic security file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// The whole file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DynsecFile {
    #[serde(rename = "defaultACLAccess", default)]
    pub default_access: DefaultAccess,
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    #[serde(default)]
    pub groups: Vec<GroupEntry>,
    #[serde(rename = "anonymousGroup", default, skip_serializing_if = "Option::is_none")]
    pub anonymous_group: Option<String>,
    #[serde(default)]
    pub roles: Vec<RoleEntry>,
}

/// What happens when no ACL of a role matches (`defaultACLAccess`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct DefaultAccess {
    #[serde(rename = "publishClientSend")]
    pub publish_client_send: bool,
    #[serde(rename = "publishClientReceive")]
    pub publish_client_receive: bool,
    pub subscribe: bool,
    pub unsubscribe: bool,
}

impl Default for DefaultAccess {
    /// The plugin's defaults: clients may receive and unsubscribe, not publish or subscribe.
    fn default() -> Self {
        DefaultAccess { publish_client_send: false, publish_client_receive: true, subscribe: false, unsubscribe: true }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ClientEntry {
    pub username: String,
    #[serde(alias = "textName", default, skip_serializing_if = "Option::is_none")]
    pub textname: Option<String>,
    #[serde(alias = "textDescription", default, skip_serializing_if = "Option::is_none")]
    pub textdescription: Option<String>,
    /// When set, the client may only connect with this client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clientid: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default)]
    pub roles: Vec<RoleRef>,
    /// base64 of PBKDF2-HMAC-SHA512(password, salt, iterations); absent: the client cannot log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct GroupEntry {
    pub groupname: String,
    #[serde(alias = "textName", default, skip_serializing_if = "Option::is_none")]
    pub textname: Option<String>,
    #[serde(alias = "textDescription", default, skip_serializing_if = "Option::is_none")]
    pub textdescription: Option<String>,
    #[serde(default)]
    pub roles: Vec<RoleRef>,
    #[serde(default)]
    pub clients: Vec<ClientRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RoleEntry {
    pub rolename: String,
    #[serde(alias = "textName", default, skip_serializing_if = "Option::is_none")]
    pub textname: Option<String>,
    #[serde(alias = "textDescription", default, skip_serializing_if = "Option::is_none")]
    pub textdescription: Option<String>,
    #[serde(default)]
    pub acls: Vec<AclEntry>,
}

/// A role given to a client or group, with the priority it has there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RoleRef {
    pub rolename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

/// A client in a group, with the priority the group has for that client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClientRef {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

/// The check an ACL applies to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AclType {
    #[serde(rename = "publishClientSend")]
    PublishClientSend,
    #[serde(rename = "publishClientReceive")]
    PublishClientReceive,
    #[serde(rename = "subscribeLiteral")]
    SubscribeLiteral,
    #[serde(rename = "subscribePattern")]
    SubscribePattern,
    #[serde(rename = "unsubscribeLiteral")]
    UnsubscribeLiteral,
    #[serde(rename = "unsubscribePattern")]
    UnsubscribePattern,
}

impl AclType {
    pub fn parse(name: &str) -> Option<AclType> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AclEntry {
    pub acltype: AclType,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default)]
    pub allow: bool,
}

impl DynsecFile {
    pub fn load(path: &Path) -> Result<DynsecFile, DynsecFileError> {
        let text = std::fs::read(path).map_err(|source| DynsecFileError::Read { path: path.to_path_buf(), source })?;
        serde_json::from_slice(&text)
            .map_err(|err| DynsecFileError::Parse { path: path.to_path_buf(), reason: err.to_string() })
    }

    pub fn client(&self, username: &str) -> Option<&ClientEntry> {
        self.clients.iter().find(|client| client.username == username)
    }

    pub fn client_mut(&mut self, username: &str) -> Option<&mut ClientEntry> {
        self.clients.iter_mut().find(|client| client.username == username)
    }

    pub fn group(&self, groupname: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|group| group.groupname == groupname)
    }

    pub fn group_mut(&mut self, groupname: &str) -> Option<&mut GroupEntry> {
        self.groups.iter_mut().find(|group| group.groupname == groupname)
    }

    pub fn role(&self, rolename: &str) -> Option<&RoleEntry> {
        self.roles.iter().find(|role| role.rolename == rolename)
    }

    pub fn role_mut(&mut self, rolename: &str) -> Option<&mut RoleEntry> {
        self.roles.iter_mut().find(|role| role.rolename == rolename)
    }

    /// The groups `username` is in, with the group's priority for that client.
    pub fn groups_of<'a>(&'a self, username: &'a str) -> impl Iterator<Item = (&'a GroupEntry, Option<i64>)> + 'a {
        self.groups.iter().filter_map(move |group| {
            group.clients.iter().find(|member| member.username == username).map(|member| (group, member.priority))
        })
    }

    /// Writes the file (pretty JSON, tab-indented like the plugin's) through a temporary file in the same
    /// directory, synced, then renamed over the old one. An existing file keeps its permissions; a new one
    /// is 0600 (it holds password hashes).
    pub fn write(&self, path: &Path) -> Result<(), DynsecFileError> {
        let write_error = |source| DynsecFileError::Write { path: path.to_path_buf(), source };
        let mut text = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
        self.serialize(&mut serializer).map_err(|err| write_error(std::io::Error::other(err)))?;
        text.push(b'\n');
        replace_file(path, &text, FileMode::KeepExisting).map_err(write_error)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Written by Debian's `mosquitto_ctrl dynsec init ds.json admin` (Mosquitto 2.0.11), password `pw`.
    pub(crate) const MOSQUITTO_INIT: &str = r##"{
	"clients":	[{
			"username":	"admin",
			"textName":	"Dynsec admin user",
			"password":	"w1c9ZbvGZwAYTev5OE0nezXXDU6o0p1/xB5eoBldYJOGmxDxw62AJ9IMzytF8CIpqBXqEtyQgdfC46oPBhMXsg==",
			"salt":	"Jj2fljqM10Zht1bu",
			"iterations":	101,
			"roles":	[{
					"rolename":	"admin"
				}]
		}],
	"roles":	[{
			"rolename":	"admin",
			"acls":	[{
					"acltype":	"publishClientSend",
					"topic":	"$CONTROL/dynamic-security/#",
					"allow":	true
				}, {
					"acltype":	"publishClientReceive",
					"topic":	"$CONTROL/dynamic-security/#",
					"allow":	true
				}, {
					"acltype":	"subscribePattern",
					"topic":	"$CONTROL/dynamic-security/#",
					"allow":	true
				}, {
					"acltype":	"publishClientReceive",
					"topic":	"$SYS/#",
					"allow":	true
				}, {
					"acltype":	"subscribePattern",
					"topic":	"$SYS/#",
					"allow":	true
				}, {
					"acltype":	"publishClientReceive",
					"topic":	"#",
					"allow":	true
				}, {
					"acltype":	"subscribePattern",
					"topic":	"#",
					"allow":	true
				}, {
					"acltype":	"unsubscribePattern",
					"topic":	"#",
					"allow":	true
				}]
		}],
	"defaultACLAccess":	{
		"publishClientSend":	false,
		"publishClientReceive":	true,
		"subscribe":	false,
		"unsubscribe":	true
	}
}"##;

    #[test]
    fn the_file_mosquitto_ctrl_init_writes_is_read() {
        let file: DynsecFile = serde_json::from_str(MOSQUITTO_INIT).expect("parses");
        let admin = file.client("admin").expect("admin");
        assert_eq!(admin.textname.as_deref(), Some("Dynsec admin user"));
        assert_eq!(admin.iterations, Some(101));
        assert_eq!(admin.roles, [RoleRef { rolename: "admin".into(), priority: None }]);
        assert_eq!(file.role("admin").map(|role| role.acls.len()), Some(8));
        assert_eq!(file.default_access, DefaultAccess::default());
        assert_eq!(file.anonymous_group, None);
    }

    #[test]
    fn write_then_load_round_trips_and_keeps_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("shardmq-dynsec-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ds.json");
        let mut file: DynsecFile = serde_json::from_str(MOSQUITTO_INIT).unwrap();
        file.anonymous_group = Some("anon".into());
        file.groups.push(GroupEntry { groupname: "anon".into(), ..GroupEntry::default() });
        file.write(&path).unwrap();
        assert_eq!(DynsecFile::load(&path).unwrap(), file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"textname\": \"Dynsec admin user\""), "{text}");
        assert!(!text.contains("disabled"), "{text}");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, ["ds.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_acl_type_is_a_parse_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("shardmq-dynsec-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ds.json");
        std::fs::write(
            &path,
            r#"{"roles":[{"rolename":"r","acls":[{"acltype":"publish","topic":"a","allow":true}]}]}"#,
        )
        .unwrap();
        let err = DynsecFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("ds.json") && err.contains("publish"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
