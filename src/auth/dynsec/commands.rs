//! The commands of the `$CONTROL/dynamic-security/v1` topic, as `mosquitto_ctrl dynsec` sends them:
//! a JSON object `{"commands":[{"command":"createClient","username":...}, ...]}`, each applied in turn to
//! the file's state, each answered in `{"responses":[{"command":...,"error"?:...,"data"?:...}]}` (the
//! `correlationData` of a command is echoed). Errors use Mosquitto's texts, which `mosquitto_ctrl` prints.
//! A payload that is not JSON, or a command that is not known, is answered with an error; nothing here
//! panics on what a client sends.

use serde_json::{json, Map, Value};

use super::file::{AclEntry, AclType, ClientEntry, ClientRef, DynsecFile, GroupEntry, RoleEntry, RoleRef};
use super::rules::hash_password;
use crate::protocol::topic::validate_topic_filter;

/// Commands accepted in one payload; more are answered with an error (a bound on the work of one PUBLISH).
pub const COMMANDS_PER_PAYLOAD_MAX: usize = 1000;

/// What a payload did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The response payload for `$CONTROL/dynamic-security/v1/response`.
    pub response: Vec<u8>,
    /// Some command changed the state (the file must be written and the rules rebuilt).
    pub changed: bool,
    /// User names whose live connections must be closed (deleted, disabled, credentials changed).
    pub kick: Vec<String>,
}

type Reply = Result<Option<Value>, &'static str>;

/// Applies every command of `payload` to `state`.
pub fn apply(state: &mut DynsecFile, payload: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let commands = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut object)) => match object.remove("commands") {
            Some(Value::Array(commands)) => commands,
            _ => return outcome.single_error("Unknown command", "Invalid/missing commands"),
        },
        Ok(_) => return outcome.single_error("Unknown command", "Invalid/missing commands"),
        Err(_) => return outcome.single_error("Unknown command", "Payload not valid JSON"),
    };
    if commands.len() > COMMANDS_PER_PAYLOAD_MAX {
        return outcome.single_error("Unknown command", "Too many commands in one payload");
    }
    let mut responses = Vec::with_capacity(commands.len());
    for command in &commands {
        let Some(command) = command.as_object() else {
            responses.push(response("Unknown command", Err("Command not an object"), None));
            continue;
        };
        let name = command.get("command").and_then(Value::as_str).unwrap_or("Unknown command");
        let before_kick = outcome.kick.len();
        let reply = run(state, name, command, &mut outcome);
        if reply.is_err() {
            outcome.kick.truncate(before_kick);
        }
        responses.push(response(name, reply, command.get("correlationData")));
    }
    outcome.response = json!({ "responses": responses }).to_string().into_bytes();
    outcome
}

impl Outcome {
    fn single_error(mut self, command: &str, error: &'static str) -> Outcome {
        self.response = json!({ "responses": [response(command, Err(error), None)] }).to_string().into_bytes();
        self
    }
}

fn response(command: &str, reply: Reply, correlation: Option<&Value>) -> Value {
    let mut object = Map::new();
    object.insert("command".into(), Value::String(command.to_string()));
    match reply {
        Ok(Some(data)) => {
            object.insert("data".into(), data);
        }
        Ok(None) => {}
        Err(error) => {
            object.insert("error".into(), Value::String(error.to_string()));
        }
    }
    if let Some(correlation) = correlation {
        object.insert("correlationData".into(), correlation.clone());
    }
    Value::Object(object)
}

/// Runs one command; `Ok` with the data to answer, if any.
fn run(state: &mut DynsecFile, name: &str, command: &Map<String, Value>, outcome: &mut Outcome) -> Reply {
    let mutating = !matches!(
        name,
        "getClient"
            | "listClients"
            | "getGroup"
            | "listGroups"
            | "getRole"
            | "listRoles"
            | "getDefaultACLAccess"
            | "getAnonymousGroup"
    );
    let reply = match name {
        "createClient" => create_client(state, command),
        "deleteClient" => delete_client(state, command, outcome),
        "setClientPassword" => set_client_password(state, command, outcome),
        "setClientId" => set_client_id(state, command, outcome),
        "enableClient" => set_client_disabled(state, command, false, outcome),
        "disableClient" => set_client_disabled(state, command, true, outcome),
        "addClientRole" => add_client_role(state, command),
        "removeClientRole" => remove_client_role(state, command),
        "modifyClient" => modify_client(state, command, outcome),
        "getClient" => get_client(state, command),
        "listClients" => list(command, "clients", &state.clients, |client| client_json(state, client), |c| &c.username),
        "createGroup" => create_group(state, command),
        "deleteGroup" => delete_group(state, command),
        "addGroupClient" => add_group_client(state, command),
        "removeGroupClient" => remove_group_client(state, command),
        "addGroupRole" => add_group_role(state, command),
        "removeGroupRole" => remove_group_role(state, command),
        "modifyGroup" => modify_group(state, command),
        "getGroup" => get_group(state, command),
        "listGroups" => list(command, "groups", &state.groups, group_json, |group| &group.groupname),
        "setAnonymousGroup" => set_anonymous_group(state, command),
        "getAnonymousGroup" => {
            Ok(Some(json!({ "group": { "groupname": state.anonymous_group.clone().unwrap_or_default() } })))
        }
        "createRole" => create_role(state, command),
        "deleteRole" => delete_role(state, command),
        "addRoleACL" => add_role_acl(state, command),
        "removeRoleACL" => remove_role_acl(state, command),
        "modifyRole" => modify_role(state, command),
        "getRole" => get_role(state, command),
        "listRoles" => list(command, "roles", &state.roles, role_json, |role| &role.rolename),
        "setDefaultACLAccess" => set_default_access(state, command),
        "getDefaultACLAccess" => Ok(Some(default_access_json(state))),
        _ => Err("Unknown command"),
    };
    if mutating && reply.is_ok() {
        outcome.changed = true;
    }
    reply
}

fn text<'a>(command: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    command.get(field).and_then(Value::as_str)
}

fn name<'a>(command: &'a Map<String, Value>, field: &str, error: &'static str) -> Result<&'a str, &'static str> {
    text(command, field).filter(|name| !name.is_empty()).ok_or(error)
}

fn username(command: &Map<String, Value>) -> Result<&str, &'static str> {
    name(command, "username", "Invalid/missing username")
}

fn groupname(command: &Map<String, Value>) -> Result<&str, &'static str> {
    name(command, "groupname", "Invalid/missing groupname")
}

fn rolename(command: &Map<String, Value>) -> Result<&str, &'static str> {
    name(command, "rolename", "Invalid/missing rolename")
}

fn priority(command: &Map<String, Value>) -> Option<i64> {
    command.get("priority").and_then(Value::as_i64)
}

fn optional_text(command: &Map<String, Value>, field: &str) -> Option<String> {
    text(command, field).map(str::to_string)
}

/// `roles: [{rolename, priority}]` of a create / modify command; every role must exist.
fn role_refs(state: &DynsecFile, command: &Map<String, Value>) -> Result<Option<Vec<RoleRef>>, &'static str> {
    let Some(roles) = command.get("roles") else { return Ok(None) };
    let roles = roles.as_array().ok_or("Invalid/missing roles")?;
    let mut refs: Vec<RoleRef> = Vec::with_capacity(roles.len());
    for role in roles {
        let role = role.as_object().ok_or("Invalid/missing roles")?;
        let rolename = rolename(role)?;
        if state.role(rolename).is_none() {
            return Err("Role not found");
        }
        refs.retain(|known| known.rolename != rolename);
        refs.push(RoleRef { rolename: rolename.to_string(), priority: priority(role) });
    }
    Ok(Some(refs))
}

/// A group a client is put in, with its optional priority.
type GroupRef = (String, Option<i64>);

/// `groups: [{groupname, priority}]`; every group must exist.
fn group_refs(state: &DynsecFile, command: &Map<String, Value>) -> Result<Option<Vec<GroupRef>>, &'static str> {
    let Some(groups) = command.get("groups") else { return Ok(None) };
    let groups = groups.as_array().ok_or("Invalid/missing groups")?;
    let mut refs = Vec::with_capacity(groups.len());
    for group in groups {
        let group = group.as_object().ok_or("Invalid/missing groups")?;
        let groupname = groupname(group)?;
        if state.group(groupname).is_none() {
            return Err("Group not found");
        }
        refs.push((groupname.to_string(), priority(group)));
    }
    Ok(Some(refs))
}

fn set_password(client: &mut ClientEntry, password: &str) {
    let (hash, salt, iterations) = hash_password(password);
    client.password = Some(hash);
    client.salt = Some(salt);
    client.iterations = Some(iterations);
}

fn create_client(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let username = username(command)?;
    if state.client(username).is_some() {
        return Err("Client already exists");
    }
    let roles = role_refs(state, command)?.unwrap_or_default();
    let groups = group_refs(state, command)?.unwrap_or_default();
    let mut client = ClientEntry {
        username: username.to_string(),
        textname: optional_text(command, "textname"),
        textdescription: optional_text(command, "textdescription"),
        clientid: optional_text(command, "clientid").filter(|id| !id.is_empty()),
        roles,
        ..ClientEntry::default()
    };
    if let Some(password) = text(command, "password") {
        set_password(&mut client, password);
    }
    state.clients.push(client);
    for (groupname, priority) in groups {
        join_group(state, &groupname, username, priority);
    }
    Ok(None)
}

fn join_group(state: &mut DynsecFile, groupname: &str, username: &str, priority: Option<i64>) {
    if let Some(group) = state.group_mut(groupname) {
        group.clients.retain(|member| member.username != username);
        group.clients.push(ClientRef { username: username.to_string(), priority });
    }
}

fn delete_client(state: &mut DynsecFile, command: &Map<String, Value>, outcome: &mut Outcome) -> Reply {
    let username = username(command)?;
    let before = state.clients.len();
    state.clients.retain(|client| client.username != username);
    if state.clients.len() == before {
        return Err("Client not found");
    }
    for group in &mut state.groups {
        group.clients.retain(|member| member.username != username);
    }
    outcome.kick.push(username.to_string());
    Ok(None)
}

fn set_client_password(state: &mut DynsecFile, command: &Map<String, Value>, outcome: &mut Outcome) -> Reply {
    let username = username(command)?;
    let password = text(command, "password").ok_or("Invalid/missing password")?;
    let client = state.client_mut(username).ok_or("Client not found")?;
    set_password(client, password);
    outcome.kick.push(username.to_string());
    Ok(None)
}

fn set_client_id(state: &mut DynsecFile, command: &Map<String, Value>, outcome: &mut Outcome) -> Reply {
    let username = username(command)?;
    let clientid = optional_text(command, "clientid").filter(|id| !id.is_empty());
    let client = state.client_mut(username).ok_or("Client not found")?;
    client.clientid = clientid;
    outcome.kick.push(username.to_string());
    Ok(None)
}

fn set_client_disabled(
    state: &mut DynsecFile,
    command: &Map<String, Value>,
    disabled: bool,
    outcome: &mut Outcome,
) -> Reply {
    let username = username(command)?;
    let client = state.client_mut(username).ok_or("Client not found")?;
    client.disabled = disabled;
    if disabled {
        outcome.kick.push(username.to_string());
    }
    Ok(None)
}

fn add_client_role(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let (username, rolename) = (username(command)?, rolename(command)?);
    if state.role(rolename).is_none() {
        return Err("Role not found");
    }
    let client = state.client_mut(username).ok_or("Client not found")?;
    client.roles.retain(|role| role.rolename != rolename);
    client.roles.push(RoleRef { rolename: rolename.to_string(), priority: priority(command) });
    Ok(None)
}

fn remove_client_role(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let (username, rolename) = (username(command)?, rolename(command)?);
    if state.role(rolename).is_none() {
        return Err("Role not found");
    }
    let client = state.client_mut(username).ok_or("Client not found")?;
    client.roles.retain(|role| role.rolename != rolename);
    Ok(None)
}

fn modify_client(state: &mut DynsecFile, command: &Map<String, Value>, outcome: &mut Outcome) -> Reply {
    let username = username(command)?;
    if state.client(username).is_none() {
        return Err("Client not found");
    }
    let roles = role_refs(state, command)?;
    let groups = group_refs(state, command)?;
    let client = state.client_mut(username).ok_or("Client not found")?;
    let mut credentials_changed = false;
    if let Some(password) = text(command, "password") {
        set_password(client, password);
        credentials_changed = true;
    }
    if command.contains_key("clientid") {
        client.clientid = optional_text(command, "clientid").filter(|id| !id.is_empty());
        credentials_changed = true;
    }
    if let Some(textname) = optional_text(command, "textname") {
        client.textname = Some(textname);
    }
    if let Some(textdescription) = optional_text(command, "textdescription") {
        client.textdescription = Some(textdescription);
    }
    if let Some(roles) = roles {
        client.roles = roles;
    }
    if let Some(groups) = groups {
        for group in &mut state.groups {
            group.clients.retain(|member| member.username != username);
        }
        for (groupname, priority) in groups {
            join_group(state, &groupname, username, priority);
        }
    }
    if credentials_changed {
        outcome.kick.push(username.to_string());
    }
    Ok(None)
}

fn get_client(state: &DynsecFile, command: &Map<String, Value>) -> Reply {
    let client = state.client(username(command)?).ok_or("Client not found")?;
    Ok(Some(json!({ "client": client_json(state, client) })))
}

fn client_json(state: &DynsecFile, client: &ClientEntry) -> Value {
    let mut object = Map::new();
    object.insert("username".into(), json!(client.username));
    if let Some(clientid) = &client.clientid {
        object.insert("clientid".into(), json!(clientid));
    }
    if let Some(textname) = &client.textname {
        object.insert("textname".into(), json!(textname));
    }
    if let Some(textdescription) = &client.textdescription {
        object.insert("textdescription".into(), json!(textdescription));
    }
    if client.disabled {
        object.insert("disabled".into(), json!(true));
    }
    object.insert("roles".into(), role_refs_json(&client.roles));
    let groups: Vec<Value> = state
        .groups_of(&client.username)
        .map(|(group, priority)| with_priority(json!({ "groupname": group.groupname }), priority))
        .collect();
    object.insert("groups".into(), Value::Array(groups));
    Value::Object(object)
}

fn with_priority(mut value: Value, priority: Option<i64>) -> Value {
    if let (Some(priority), Some(object)) = (priority, value.as_object_mut()) {
        object.insert("priority".into(), json!(priority));
    }
    value
}

fn role_refs_json(roles: &[RoleRef]) -> Value {
    Value::Array(roles.iter().map(|role| with_priority(json!({ "rolename": role.rolename }), role.priority)).collect())
}

/// `listClients` / `listGroups` / `listRoles`: names (or, with `verbose`, whole objects), `count` from
/// `offset` (count -1 or absent: all), and the total.
fn list<T>(
    command: &Map<String, Value>,
    key: &str,
    items: &[T],
    verbose_json: impl Fn(&T) -> Value,
    name_of: impl Fn(&T) -> &String,
) -> Reply {
    let verbose = command.get("verbose").and_then(Value::as_bool).unwrap_or(false);
    let count = command.get("count").and_then(Value::as_i64).unwrap_or(-1);
    let offset = command.get("offset").and_then(Value::as_i64).unwrap_or(0).max(0);
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let count = if count < 0 { usize::MAX } else { usize::try_from(count).unwrap_or(usize::MAX) };
    let listed: Vec<Value> = items
        .iter()
        .skip(offset)
        .take(count)
        .map(|item| if verbose { verbose_json(item) } else { json!(name_of(item)) })
        .collect();
    Ok(Some(json!({ "totalCount": items.len(), key: listed })))
}

fn create_group(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let groupname = groupname(command)?;
    if state.group(groupname).is_some() {
        return Err("Group already exists");
    }
    let roles = role_refs(state, command)?.unwrap_or_default();
    state.groups.push(GroupEntry {
        groupname: groupname.to_string(),
        textname: optional_text(command, "textname"),
        textdescription: optional_text(command, "textdescription"),
        roles,
        clients: Vec::new(),
    });
    Ok(None)
}

fn delete_group(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let groupname = groupname(command)?;
    if state.group(groupname).is_none() {
        return Err("Group not found");
    }
    if state.anonymous_group.as_deref() == Some(groupname) {
        return Err("Deleting the anonymous group is forbidden");
    }
    state.groups.retain(|group| group.groupname != groupname);
    Ok(None)
}

fn add_group_client(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let (groupname, username) = (groupname(command)?, username(command)?);
    if state.client(username).is_none() {
        return Err("Client not found");
    }
    let group = state.group(groupname).ok_or("Group not found")?;
    if group.clients.iter().any(|member| member.username == username) {
        return Err("Client is already in this group");
    }
    join_group(state, groupname, username, priority(command));
    Ok(None)
}

fn remove_group_client(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let (groupname, username) = (groupname(command)?, username(command)?);
    if state.client(username).is_none() {
        return Err("Client not found");
    }
    let group = state.group_mut(groupname).ok_or("Group not found")?;
    group.clients.retain(|member| member.username != username);
    Ok(None)
}

fn add_group_role(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let (groupname, rolename) = (groupname(command)?, rolename(command)?);
    if state.role(rolename).is_none() {
        return Err("Role not found");
    }
    let group = state.group_mut(groupname).ok_or("Group not found")?;
    group.roles.retain(|role| role.rolename != rolename);
    group.roles.push(RoleRef { rolename: rolename.to_string(), priority: priority(command) });
    Ok(None)
}

fn remove_group_role(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let (groupname, rolename) = (groupname(command)?, rolename(command)?);
    if state.role(rolename).is_none() {
        return Err("Role not found");
    }
    let group = state.group_mut(groupname).ok_or("Group not found")?;
    group.roles.retain(|role| role.rolename != rolename);
    Ok(None)
}

fn modify_group(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let groupname = groupname(command)?;
    if state.group(groupname).is_none() {
        return Err("Group not found");
    }
    let roles = role_refs(state, command)?;
    let clients = match command.get("clients") {
        None => None,
        Some(clients) => {
            let clients = clients.as_array().ok_or("Invalid/missing clients")?;
            let mut refs: Vec<ClientRef> = Vec::with_capacity(clients.len());
            for client in clients {
                let client = client.as_object().ok_or("Invalid/missing clients")?;
                let username = username(client)?;
                if state.client(username).is_none() {
                    return Err("Client not found");
                }
                refs.retain(|known| known.username != username);
                refs.push(ClientRef { username: username.to_string(), priority: priority(client) });
            }
            Some(refs)
        }
    };
    let group = state.group_mut(groupname).ok_or("Group not found")?;
    if let Some(textname) = optional_text(command, "textname") {
        group.textname = Some(textname);
    }
    if let Some(textdescription) = optional_text(command, "textdescription") {
        group.textdescription = Some(textdescription);
    }
    if let Some(roles) = roles {
        group.roles = roles;
    }
    if let Some(clients) = clients {
        group.clients = clients;
    }
    Ok(None)
}

fn get_group(state: &DynsecFile, command: &Map<String, Value>) -> Reply {
    let group = state.group(groupname(command)?).ok_or("Group not found")?;
    Ok(Some(json!({ "group": group_json(group) })))
}

fn group_json(group: &GroupEntry) -> Value {
    let mut object = Map::new();
    object.insert("groupname".into(), json!(group.groupname));
    if let Some(textname) = &group.textname {
        object.insert("textname".into(), json!(textname));
    }
    if let Some(textdescription) = &group.textdescription {
        object.insert("textdescription".into(), json!(textdescription));
    }
    let clients: Vec<Value> = group.clients.iter().map(|member| json!({ "username": member.username })).collect();
    object.insert("clients".into(), Value::Array(clients));
    object.insert("roles".into(), role_refs_json(&group.roles));
    Value::Object(object)
}

fn set_anonymous_group(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let groupname = groupname(command)?;
    if state.group(groupname).is_none() {
        return Err("Group not found");
    }
    state.anonymous_group = Some(groupname.to_string());
    Ok(None)
}

/// An ACL of a command: `acltype`, `topic` (a valid filter), `allow` (default false), `priority`
/// (default 0, as the plugin stores it).
fn acl_entry(command: &Map<String, Value>) -> Result<AclEntry, &'static str> {
    let acltype = text(command, "acltype").and_then(AclType::parse).ok_or("Invalid/missing acltype")?;
    let topic = text(command, "topic").filter(|topic| validate_topic_filter(topic).is_ok());
    let topic = topic.ok_or("Invalid/missing topic")?;
    let allow = command.get("allow").and_then(Value::as_bool).unwrap_or(false);
    Ok(AclEntry { acltype, topic: topic.to_string(), priority: Some(priority(command).unwrap_or(0)), allow })
}

fn acl_entries(command: &Map<String, Value>) -> Result<Option<Vec<AclEntry>>, &'static str> {
    let Some(acls) = command.get("acls") else { return Ok(None) };
    let acls = acls.as_array().ok_or("Invalid/missing acls")?;
    let mut entries: Vec<AclEntry> = Vec::with_capacity(acls.len());
    for acl in acls {
        let entry = acl_entry(acl.as_object().ok_or("Invalid/missing acls")?)?;
        if entries.iter().any(|known| known.acltype == entry.acltype && known.topic == entry.topic) {
            return Err("Duplicate ACLs");
        }
        entries.push(entry);
    }
    Ok(Some(entries))
}

fn create_role(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let rolename = rolename(command)?;
    if state.role(rolename).is_some() {
        return Err("Role already exists");
    }
    let acls = acl_entries(command)?.unwrap_or_default();
    state.roles.push(RoleEntry {
        rolename: rolename.to_string(),
        textname: optional_text(command, "textname"),
        textdescription: optional_text(command, "textdescription"),
        acls,
    });
    Ok(None)
}

fn delete_role(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let rolename = rolename(command)?;
    if state.role(rolename).is_none() {
        return Err("Role not found");
    }
    state.roles.retain(|role| role.rolename != rolename);
    for client in &mut state.clients {
        client.roles.retain(|role| role.rolename != rolename);
    }
    for group in &mut state.groups {
        group.roles.retain(|role| role.rolename != rolename);
    }
    Ok(None)
}

fn add_role_acl(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let rolename = rolename(command)?;
    let entry = acl_entry(command)?;
    let role = state.role_mut(rolename).ok_or("Role not found")?;
    if role.acls.iter().any(|acl| acl.acltype == entry.acltype && acl.topic == entry.topic) {
        return Err("ACL with this topic already exists");
    }
    role.acls.push(entry);
    Ok(None)
}

fn remove_role_acl(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let rolename = rolename(command)?;
    let acltype = text(command, "acltype").and_then(AclType::parse).ok_or("Invalid/missing acltype")?;
    let topic = text(command, "topic").ok_or("Invalid/missing topic")?;
    let role = state.role_mut(rolename).ok_or("Role not found")?;
    let before = role.acls.len();
    role.acls.retain(|acl| !(acl.acltype == acltype && acl.topic == topic));
    if role.acls.len() == before {
        return Err("ACL not found");
    }
    Ok(None)
}

fn modify_role(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let rolename = rolename(command)?;
    let acls = acl_entries(command)?;
    let role = state.role_mut(rolename).ok_or("Role not found")?;
    if let Some(textname) = optional_text(command, "textname") {
        role.textname = Some(textname);
    }
    if let Some(textdescription) = optional_text(command, "textdescription") {
        role.textdescription = Some(textdescription);
    }
    if let Some(acls) = acls {
        role.acls = acls;
    }
    Ok(None)
}

fn get_role(state: &DynsecFile, command: &Map<String, Value>) -> Reply {
    let role = state.role(rolename(command)?).ok_or("Role not found")?;
    Ok(Some(json!({ "role": role_json(role) })))
}

fn role_json(role: &RoleEntry) -> Value {
    let mut object = Map::new();
    object.insert("rolename".into(), json!(role.rolename));
    if let Some(textname) = &role.textname {
        object.insert("textname".into(), json!(textname));
    }
    if let Some(textdescription) = &role.textdescription {
        object.insert("textdescription".into(), json!(textdescription));
    }
    let acls: Vec<Value> = role
        .acls
        .iter()
        .map(|acl| {
            json!({
                "acltype": acl.acltype,
                "topic": acl.topic,
                "priority": acl.priority.unwrap_or(0),
                "allow": acl.allow,
            })
        })
        .collect();
    object.insert("acls".into(), Value::Array(acls));
    Value::Object(object)
}

/// `acls: [{acltype, allow}]` (`mosquitto_ctrl` 2.0.11 sends `"access": "allow" | "deny"` instead of
/// `allow`; both are read). Nothing changes unless every entry is valid.
fn set_default_access(state: &mut DynsecFile, command: &Map<String, Value>) -> Reply {
    let acls = command.get("acls").and_then(Value::as_array).ok_or("Missing/invalid acls array")?;
    let mut access = state.default_access;
    for acl in acls {
        let acl = acl.as_object().ok_or("Missing/invalid acls array")?;
        let allow = match (acl.get("allow").and_then(Value::as_bool), text(acl, "access")) {
            (Some(allow), _) => allow,
            (None, Some("allow")) => true,
            (None, Some("deny")) => false,
            _ => return Err("Invalid/missing allow"),
        };
        match text(acl, "acltype") {
            Some("publishClientSend") => access.publish_client_send = allow,
            Some("publishClientReceive") => access.publish_client_receive = allow,
            Some("subscribe") => access.subscribe = allow,
            Some("unsubscribe") => access.unsubscribe = allow,
            _ => return Err("Invalid/missing acltype"),
        }
    }
    state.default_access = access;
    Ok(None)
}

fn default_access_json(state: &DynsecFile) -> Value {
    let access = state.default_access;
    json!({ "acls": [
        { "acltype": "publishClientSend", "allow": access.publish_client_send },
        { "acltype": "publishClientReceive", "allow": access.publish_client_receive },
        { "acltype": "subscribe", "allow": access.subscribe },
        { "acltype": "unsubscribe", "allow": access.unsubscribe },
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(state: &mut DynsecFile, commands: Value) -> (Value, Outcome) {
        let outcome = apply(state, json!({ "commands": commands }).to_string().as_bytes());
        (serde_json::from_slice(&outcome.response).expect("the response is JSON"), outcome)
    }

    #[test]
    fn create_get_and_list_a_client_as_mosquitto_ctrl_sends_them() {
        let mut state = DynsecFile::default();
        let (response, outcome) = send(
            &mut state,
            json!([
                {"command":"createRole","rolename":"r1"},
                {"command":"createClient","username":"alice","clientid":"aliceid","password":"apw"},
                {"command":"addClientRole","username":"alice","rolename":"r1","priority":3},
                {"command":"getClient","username":"alice","correlationData":"c1"},
                {"command":"listClients","count":5,"offset":0},
            ]),
        );
        assert!(outcome.changed);
        assert_eq!(response["responses"][0], json!({"command":"createRole"}));
        assert_eq!(
            response["responses"][3],
            json!({"command":"getClient","correlationData":"c1","data":{"client":{
                "username":"alice","clientid":"aliceid","roles":[{"rolename":"r1","priority":3}],"groups":[]}}})
        );
        assert_eq!(response["responses"][4]["data"], json!({"totalCount":1,"clients":["alice"]}));
        assert!(state.client("alice").and_then(|client| client.password.as_ref()).is_some());
    }

    #[test]
    fn errors_use_the_plugins_texts_and_change_nothing() {
        let mut state = DynsecFile::default();
        send(&mut state, json!([{"command":"createClient","username":"alice"}]));
        let (response, outcome) = send(
            &mut state,
            json!([
                {"command":"createClient","username":"alice"},
                {"command":"getClient","username":"bob"},
                {"command":"addClientRole","username":"alice","rolename":"nope"},
                {"command":"frobnicate"},
                {"command":"addRoleACL","rolename":"r","acltype":"publish","topic":"a"},
                "not an object",
            ]),
        );
        let errors: Vec<&str> =
            (0..6).map(|index| response["responses"][index]["error"].as_str().unwrap_or("")).collect();
        assert_eq!(
            errors,
            [
                "Client already exists",
                "Client not found",
                "Role not found",
                "Unknown command",
                "Invalid/missing acltype",
                "Command not an object"
            ]
        );
        assert!(!outcome.changed && outcome.kick.is_empty());
    }

    #[test]
    fn a_payload_that_is_not_json_gets_an_error_answer() {
        let mut state = DynsecFile::default();
        for payload in [&b"{not json"[..], b"[]", b"{\"commands\":5}", b"\xff\xfe"] {
            let outcome = apply(&mut state, payload);
            let response: Value = serde_json::from_slice(&outcome.response).unwrap();
            assert!(response["responses"][0]["error"].is_string(), "{response}");
            assert!(!outcome.changed);
        }
    }

    #[test]
    fn delete_and_disable_kick_the_client_and_enable_does_not() {
        let mut state = DynsecFile::default();
        send(&mut state, json!([{"command":"createClient","username":"a"},{"command":"createClient","username":"b"}]));
        let (_, outcome) = send(&mut state, json!([{"command":"disableClient","username":"a"}]));
        assert_eq!(outcome.kick, ["a"]);
        assert!(state.client("a").is_some_and(|client| client.disabled));
        let (_, outcome) = send(&mut state, json!([{"command":"enableClient","username":"a"}]));
        assert!(outcome.kick.is_empty());
        let (_, outcome) = send(&mut state, json!([{"command":"deleteClient","username":"b"}]));
        assert_eq!(outcome.kick, ["b"]);
        assert!(state.client("b").is_none());
    }

    #[test]
    fn default_access_reads_the_access_word_mosquitto_ctrl_sends() {
        let mut state = DynsecFile::default();
        send(
            &mut state,
            json!([{"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientSend","access":"allow"}]}]),
        );
        assert!(state.default_access.publish_client_send);
        send(&mut state, json!([{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":true}]}]));
        assert!(state.default_access.subscribe);
        let (response, _) = send(&mut state, json!([{"command":"getDefaultACLAccess"}]));
        assert_eq!(response["responses"][0]["data"]["acls"][0], json!({"acltype":"publishClientSend","allow":true}));
    }

    #[test]
    fn deleting_a_role_removes_it_from_clients_and_groups() {
        let mut state = DynsecFile::default();
        send(
            &mut state,
            json!([
                {"command":"createRole","rolename":"r"},
                {"command":"createGroup","groupname":"g","roles":[{"rolename":"r"}]},
                {"command":"createClient","username":"u","roles":[{"rolename":"r"}],"groups":[{"groupname":"g"}]},
                {"command":"addRoleACL","rolename":"r","acltype":"publishClientSend","topic":"a/#","allow":true},
                {"command":"deleteRole","rolename":"r"},
            ]),
        );
        assert!(state.client("u").is_some_and(|client| client.roles.is_empty()));
        assert!(state.group("g").is_some_and(|group| group.roles.is_empty() && group.clients.len() == 1));
    }
}
