//! The interactive shell: rustyline with history (in the user's state dir)
//! and tab completion of commands, VM, SR and VDI names, task uuids and
//! xenstore paths; `help`;
//! Ctrl-C cancels the line (or stops a running command), Ctrl-D or `quit`
//! leaves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

use super::exec::Shell;
use super::{line_help, Line, LineCommand};
use crate::proto::rpc::RpcClient;

/// How long the names offered for completion are reused.
const NAMES_FRESH: Duration = Duration::from_secs(2);

/// Where the shell keeps its history: `$XDG_STATE_HOME/xenith/history`,
/// else `~/.local/state/xenith/history`.
pub fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("xenith").join("history"))
}

/// The words that may follow `path` in the command tree.
fn words_after(path: &[&str]) -> Vec<String> {
    let mut cmd = Line::command();
    let mut at = &mut cmd;
    for w in path {
        match at.find_subcommand_mut(w) {
            Some(next) => at = next,
            None => return Vec::new(),
        }
    }
    at.get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_owned()).chain(c.get_all_aliases().map(str::to_owned))
        })
        .collect()
}

/// What the argument being typed is.
#[derive(Debug, PartialEq, Eq)]
enum Slot {
    Words(Vec<String>),
    VmName,
    SrName,
    VdiName,
    TaskId,
    XsPath,
    Nothing,
}

/// Decides what completes the word after `before` (the words typed so far).
fn slot(before: &[&str]) -> Slot {
    match before {
        [] => Slot::Words(words_after(&[])),
        ["help", rest @ ..] => Slot::Words(words_after(rest)),
        [noun] => Slot::Words(words_after(&[noun])),
        [.., "--sr"] => Slot::SrName,
        ["vm", "list" | "create"] | ["sr", "list" | "create"] | ["vdi" | "task", "list"] => {
            Slot::Nothing
        }
        ["vm", _verb] | ["vbd" | "vif", _verb] => Slot::VmName,
        ["sr", _] | ["vdi", "create" | "import"] => Slot::SrName,
        ["vdi", _verb] => Slot::VdiName,
        ["task", _verb] => Slot::TaskId,
        ["xs", _verb] => Slot::XsPath,
        _ => Slot::Nothing,
    }
}

struct ShellHelper {
    client: RpcClient,
    rt: tokio::runtime::Handle,
    /// What each listing method last answered, and when.
    names: Mutex<HashMap<&'static str, (Instant, Vec<String>)>>,
}

impl ShellHelper {
    fn call(&self, method: &str, params: Value) -> Option<Value> {
        let client = self.client.clone();
        let call = client.call::<Value, Value>(method, params);
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(2), call).await })
            .ok()?
            .ok()
    }

    /// The `field` of each entry `method` (vm.list, sr.list...) lists.
    fn names(&self, method: &'static str, field: &str) -> Vec<String> {
        let mut cache = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, names)) = cache.get(method) {
            if at.elapsed() < NAMES_FRESH {
                return names.clone();
            }
        }
        let names: Vec<String> = self
            .call(method, json!({}))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|item| item[field].as_str().map(str::to_owned))
            .collect();
        cache.insert(method, (Instant::now(), names.clone()));
        names
    }

    /// Children of the directory the partial path is in.
    fn xs_paths(&self, partial: &str) -> Vec<String> {
        let dir = match partial.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &partial[..i],
        };
        let prefix = if dir == "/" {
            String::new()
        } else {
            dir.to_owned()
        };
        self.call("xs.ls", json!({"path": dir}))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .map(|child| format!("{prefix}/{child}"))
            .collect()
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let upto = &line[..pos];
        let start = upto.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let partial = &upto[start..];
        let before: Vec<&str> = upto[..start].split_whitespace().collect();
        // Flags are not completed; neither are words past the first argument.
        // A completed word or name is followed by a space; a path is not
        // (it may go on).
        let (options, then) = match slot(&before) {
            Slot::Words(w) => (w, " "),
            Slot::VmName => (self.names("vm.list", "name"), " "),
            Slot::SrName => (self.names("sr.list", "name"), " "),
            Slot::VdiName => (self.names("vdi.list", "name"), " "),
            Slot::TaskId => (self.names("task.list", "uuid"), " "),
            Slot::XsPath => (self.xs_paths(partial), ""),
            Slot::Nothing => (Vec::new(), ""),
        };
        let mut pairs: Vec<Pair> = options
            .into_iter()
            .filter(|o| o.starts_with(partial))
            .map(|o| Pair {
                replacement: format!("{o}{then}"),
                display: o,
            })
            .collect();
        pairs.sort_by(|a, b| a.display.cmp(&b.display));
        pairs.dedup_by(|a, b| a.display == b.display);
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// Runs the interactive shell until `quit` or Ctrl-D.
pub fn run(rt: &Runtime, mut shell: Shell) -> Result<(), String> {
    let helper = ShellHelper {
        client: shell.client.clone(),
        rt: rt.handle().clone(),
        names: Mutex::new(HashMap::new()),
    };
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
    editor.set_helper(Some(helper));
    let history = history_path();
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.load_history(path);
    }
    let mut stdout = std::io::stdout();
    println_out("xenith shell: type help, Tab completes; Ctrl-D or quit leaves.");
    loop {
        let line = match editor.readline("xenith> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("cannot read the line: {e}")),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        let parsed = match Line::try_parse_from(words.iter().copied()) {
            Ok(l) => l.command,
            Err(e) => {
                eprint_err(&e.render().to_string());
                continue;
            }
        };
        match parsed {
            LineCommand::Quit => break,
            LineCommand::Help { words } => match line_help(&words) {
                Ok(text) => println_out(&text),
                Err(e) => eprint_err(&e),
            },
            LineCommand::Run(cmd) => {
                // Ctrl-C stops the command (a stream, a wait), not the shell.
                let result = rt.block_on(async {
                    tokio::select! {
                        r = shell.run(cmd, &mut stdout) => r,
                        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
                    }
                });
                if let Err(e) = result {
                    eprint_err(&e);
                }
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn println_out(text: &str) {
    println!("{text}");
}

#[allow(clippy::print_stderr)]
fn eprint_err(text: &str) {
    eprintln!("{}", text.trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_slots_follow_the_command_tree() {
        let Slot::Words(top) = slot(&[]) else {
            panic!()
        };
        for w in ["host", "vm", "xs", "events", "tree", "help", "quit"] {
            assert!(top.contains(&w.to_owned()), "{top:?}");
        }
        let Slot::Words(vm) = slot(&["vm"]) else {
            panic!()
        };
        assert!(vm.contains(&"shutdown".to_owned()) && vm.contains(&"console".to_owned()));
        assert_eq!(slot(&["vm", "start"]), Slot::VmName);
        assert_eq!(slot(&["vbd", "plug"]), Slot::VmName);
        assert_eq!(slot(&["xs", "ls"]), Slot::XsPath);
        assert_eq!(slot(&["vm", "list"]), Slot::Nothing);
        assert_eq!(slot(&["vm", "start", "web"]), Slot::Nothing);
        assert_eq!(slot(&["sr", "get"]), Slot::SrName);
        assert_eq!(slot(&["sr", "destroy"]), Slot::SrName);
        assert_eq!(slot(&["sr", "list"]), Slot::Nothing);
        assert_eq!(slot(&["sr", "create"]), Slot::Nothing);
        assert_eq!(slot(&["vdi", "create"]), Slot::SrName);
        assert_eq!(slot(&["vdi", "import"]), Slot::SrName);
        assert_eq!(slot(&["vdi", "snapshot"]), Slot::VdiName);
        assert_eq!(slot(&["vdi", "export"]), Slot::VdiName);
        assert_eq!(slot(&["vdi", "list"]), Slot::Nothing);
        assert_eq!(slot(&["vdi", "list", "--sr"]), Slot::SrName);
        assert_eq!(slot(&["vdi", "copy", "root", "--sr"]), Slot::SrName);
        assert_eq!(slot(&["vdi", "copy", "root"]), Slot::Nothing);
        assert_eq!(slot(&["task", "cancel"]), Slot::TaskId);
        assert_eq!(slot(&["task", "list"]), Slot::Nothing);
        let Slot::Words(top) = slot(&[]) else {
            panic!()
        };
        for w in ["sr", "vdi", "task"] {
            assert!(top.contains(&w.to_owned()), "{top:?}");
        }
        let Slot::Words(vdi) = slot(&["vdi"]) else {
            panic!()
        };
        for w in ["snapshot", "clone", "copy", "import", "export", "resize"] {
            assert!(vdi.contains(&w.to_owned()), "{vdi:?}");
        }
        let Slot::Words(help) = slot(&["help", "xs"]) else {
            panic!()
        };
        assert!(help.contains(&"watch".to_owned()));
    }
}
