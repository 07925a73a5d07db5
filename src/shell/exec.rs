//! Runs one shell command against xenithd: each maps onto the RPC method
//! of the same name (CONTRACT.md), and prints the result for a person, or
//! as JSON with `--json`. Streaming commands (`events`, `xs watch`, `vm
//! console --follow`) run until the connection ends or the caller stops
//! awaiting them (Ctrl-C). The storage and task commands are run by
//! [`super::storage_exec`].

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::render;
use super::storage::{sr_request, task_request, vdi_request};
use super::{Command, HostVerb, VbdVerb, VifVerb, VmVerb, XsVerb};
use crate::proto::rpc::{ClientError, Notification, RpcClient};

/// How often `vm console --follow` asks for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// A connection to xenithd and how to print.
#[derive(Debug)]
pub struct Shell {
    pub client: RpcClient,
    notes: UnboundedReceiver<Notification>,
    pub json: bool,
    pub color: bool,
    /// Whether long operations show a progress bar (stdout is a terminal
    /// and not --json).
    pub progress: bool,
}

fn msg(e: ClientError) -> String {
    match e {
        ClientError::Remote(r) if r.details.is_empty() => format!("{}: {}", r.code, r.message),
        ClientError::Remote(r) => format!("{}: {} ({})", r.code, r.message, r.details.join(", ")),
        other => crate::error::chain(&other),
    }
}

fn io(e: std::io::Error) -> String {
    format!("cannot write the output: {e}")
}

impl Shell {
    /// Connects to xenithd's socket.
    pub async fn connect(
        socket: &std::path::Path,
        json: bool,
        color: bool,
    ) -> Result<Self, String> {
        let (client, notes) = RpcClient::connect_with_notifications(socket)
            .await
            .map_err(|e| format!("{} (is xenithd running?)", crate::error::chain(&e)))?;
        Ok(Self {
            client,
            notes,
            json,
            color,
            progress: !json && std::io::stdout().is_terminal(),
        })
    }

    pub(super) async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.client
            .call::<Value, Value>(method, params)
            .await
            .map_err(msg)
    }

    pub(super) fn show(
        &self,
        out: &mut dyn Write,
        v: &Value,
        human: impl FnOnce(&Value) -> String,
    ) -> Result<(), String> {
        let text = if self.json {
            serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
        } else {
            human(v)
        };
        if !text.is_empty() {
            writeln!(out, "{text}").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// A VM operation's result: `NAME: STATE (domid N)`.
    fn summary(&self, v: &Value) -> String {
        let domid = match &v["domid"] {
            Value::Null => String::new(),
            d => format!(" (domid {d})"),
        };
        format!(
            "{}: {}{domid}",
            render::cell(&v["name"]),
            render::cell(&v["power_state"])
        )
    }

    /// Runs one command.
    pub async fn run(&mut self, cmd: Command, out: &mut dyn Write) -> Result<(), String> {
        let color = self.color;
        match cmd {
            Command::Host {
                verb: HostVerb::Info,
            } => {
                let v = self.call("host.info", json!({})).await?;
                self.show(out, &v, |v| render::host_info(v, color))
            }
            Command::Host {
                verb: HostVerb::Devices,
            } => {
                let v = self.call("host.devices", json!({})).await?;
                self.show(out, &v, |v| render::host_devices(v, color))
            }
            Command::Tree => {
                let v = self.call("supervisor.tree", json!({})).await?;
                self.show(out, &v, |v| render::tree(v, color))
            }
            Command::Completions { shell } => {
                write!(out, "{}", super::completion_script(shell)).map_err(io)
            }
            Command::Vm { verb } => self.vm(verb, out).await,
            Command::Vbd { verb } => {
                let (method, params) = match verb {
                    VbdVerb::Plug {
                        vm,
                        disk,
                        device,
                        mode,
                    } => {
                        // A path (absolute; a relative one is refused by
                        // the daemon, with the reason); a VDI reference
                        // never starts with '/' or '.'.
                        let source = if disk.starts_with(['/', '.']) {
                            "path"
                        } else {
                            "vdi"
                        };
                        let disk = json!({source: disk, "device": device, "mode": mode});
                        ("vbd.plug", json!({"vm": vm, "disk": disk}))
                    }
                    VbdVerb::Unplug { vm, device } => {
                        ("vbd.unplug", json!({"vm": vm, "device": device}))
                    }
                };
                self.device(method, params, out).await
            }
            Command::Vif { verb } => {
                let (method, params) = match verb {
                    VifVerb::Plug { vm, bridge, mac } => (
                        "vif.plug",
                        json!({"vm": vm, "nic": {"bridge": bridge, "mac": mac}}),
                    ),
                    VifVerb::Unplug { vm, device } => {
                        ("vif.unplug", json!({"vm": vm, "device": device}))
                    }
                };
                self.device(method, params, out).await
            }
            Command::Xs { verb } => self.xs(verb, out).await,
            Command::Sr { verb } => self.storage(sr_request(verb)?, out).await,
            Command::Vdi { verb } => self.storage(vdi_request(verb)?, out).await,
            Command::Task { verb } => self.storage(task_request(verb)?, out).await,
            Command::Events { classes } => {
                let mut params = json!({});
                if !classes.is_empty() {
                    params["classes"] = json!(classes.iter().map(|c| c.name()).collect::<Vec<_>>());
                }
                self.stream("event.subscribe", params, out, |v, color| {
                    render::event(v, color)
                })
                .await
            }
        }
    }

    /// `vbd|vif plug|unplug`: says which device.
    async fn device(&self, method: &str, params: Value, out: &mut dyn Write) -> Result<(), String> {
        let v = self.call(method, params).await?;
        let done = if method.ends_with(".plug") {
            "plugged"
        } else {
            "unplugged"
        };
        self.show(out, &v, |v| {
            format!("{} {done}", render::cell(&v["device"]))
        })
    }

    async fn vm(&mut self, verb: VmVerb, out: &mut dyn Write) -> Result<(), String> {
        let color = self.color;
        let op = |method: &'static str, params: Value| (method, params);
        let (method, params) = match verb {
            VmVerb::List => {
                let v = self.call("vm.list", json!({})).await?;
                return self.show(out, &v, |v| render::vm_list(v, color));
            }
            VmVerb::Get { vm } => {
                let v = self.call("vm.get", json!({"vm": vm})).await?;
                return self.show(out, &v, |v| render::vm_get(v, color));
            }
            VmVerb::Create { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let spec: crate::vm::VmSpecFile = toml::from_str(&text)
                    .map_err(|e| format!("{}: {}", file.display(), e.message()))?;
                let v = self.call("vm.create", json!({"spec": spec})).await?;
                return self.show(out, &v, |v| render::cell(&v["uuid"]));
            }
            VmVerb::Console { vm, lines, follow } => {
                return self.console(vm, lines, follow, out).await
            }
            VmVerb::Start { vm, paused } => op("vm.start", json!({"vm": vm, "paused": paused})),
            VmVerb::Shutdown {
                vm,
                force,
                timeout,
                fallback,
            } => {
                let mut p = json!({"vm": vm, "force": force, "fallback": fallback});
                if let Some(t) = timeout {
                    p["timeout_s"] = json!(t);
                }
                op("vm.shutdown", p)
            }
            VmVerb::Reboot { vm, force } => op("vm.reboot", json!({"vm": vm, "force": force})),
            VmVerb::Pause { vm } => op("vm.pause", json!({"vm": vm})),
            VmVerb::Unpause { vm } => op("vm.unpause", json!({"vm": vm})),
            VmVerb::Kill { vm } => op("vm.kill", json!({"vm": vm})),
            VmVerb::Suspend {
                vm,
                timeout,
                no_wait,
            } => {
                let mut params = json!({"vm": vm, "async": true});
                if let Some(t) = timeout {
                    params["timeout_s"] = json!(t);
                }
                let req = super::storage::Request {
                    method: "vm.suspend",
                    params,
                    output: super::storage::Output::Task {
                        no_wait,
                        said: Some(format!("{vm}: Suspended")),
                    },
                };
                return self.storage(req, out).await;
            }
            VmVerb::Resume { vm, paused } => op("vm.resume", json!({"vm": vm, "paused": paused})),
            VmVerb::SetMemoryTarget { vm, mib } => {
                op("vm.set_memory_target", json!({"vm": vm, "mib": mib}))
            }
            VmVerb::Remove { vm } => op("vm.remove", json!({"vm": vm})),
        };
        let v = self.call(method, params).await?;
        let line = self.summary(&v);
        self.show(out, &v, |_| line)
    }

    async fn console(
        &mut self,
        vm: String,
        lines: Option<u64>,
        follow: bool,
        out: &mut dyn Write,
    ) -> Result<(), String> {
        let mut params = json!({"vm": vm});
        if let Some(n) = lines {
            params["lines"] = json!(n);
        }
        let v = self.call("vm.console", params).await?;
        if self.json && !follow {
            return self.show(out, &v, |_| String::new());
        }
        write!(out, "{}", render::cell(&v["text"])).map_err(io)?;
        out.flush().map_err(io)?;
        if !follow {
            return Ok(());
        }
        let mut offset = v["offset"].as_u64().unwrap_or(0);
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            let v = self
                .call("vm.console", json!({"vm": vm, "offset": offset}))
                .await?;
            offset = v["offset"].as_u64().unwrap_or(offset);
            let text = render::cell(&v["text"]);
            if !text.is_empty() {
                write!(out, "{text}").map_err(io)?;
                out.flush().map_err(io)?;
            }
        }
    }

    async fn xs(&mut self, verb: XsVerb, out: &mut dyn Write) -> Result<(), String> {
        let (method, params) = match verb {
            XsVerb::Ls { path } => ("xs.ls", json!({"path": path})),
            XsVerb::Read { path } => ("xs.read", json!({"path": path})),
            XsVerb::Write { path, value } => ("xs.write", json!({"path": path, "value": value})),
            XsVerb::Rm { path } => ("xs.rm", json!({"path": path})),
            XsVerb::Watch { path } => {
                return self
                    .stream("xs.watch", json!({"path": path}), out, |v, _| {
                        render::cell(&v["path"])
                    })
                    .await
            }
        };
        let v = self.call(method, params).await?;
        self.show(out, &v, |v| match v {
            Value::Array(items) => items
                .iter()
                .map(render::cell)
                .collect::<Vec<_>>()
                .join("\n"),
            Value::Object(o) if o.is_empty() => String::new(),
            other => render::cell(other),
        })
    }

    /// Subscribes, then prints each notification until the connection ends
    /// (or the caller drops this future: the subscription is then ended).
    async fn stream(
        &mut self,
        method: &str,
        params: Value,
        out: &mut dyn Write,
        line: impl Fn(&Value, bool) -> String,
    ) -> Result<(), String> {
        // Notifications left from an earlier subscription are not this one's.
        while self.notes.try_recv().is_ok() {}
        let sub = self.call(method, params).await?;
        let id = sub["subscription"].as_u64();
        let guard = Unsubscribe {
            client: self.client.clone(),
            id,
        };
        while let Some(n) = self.notes.recv().await {
            let v: Value =
                crate::proto::rpc::wire::from_named_value(&n.params).unwrap_or(Value::Null);
            if v["subscription"].as_u64().is_some()
                && v["subscription"].as_u64() != id
                && n.method != "event"
            {
                continue;
            }
            let text = if n.method == "event.dropped" {
                format!(
                    "(fell behind: {} events dropped)",
                    render::cell(&v["count"])
                )
            } else if self.json {
                serde_json::to_string(&v).map_err(|e| e.to_string())?
            } else {
                line(&v, self.color)
            };
            writeln!(out, "{text}").map_err(io)?;
            out.flush().map_err(io)?;
        }
        drop(guard);
        Err("the connection to xenithd closed".to_owned())
    }
}

/// Ends a subscription when a streaming command stops.
struct Unsubscribe {
    client: RpcClient,
    id: Option<u64>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let (Some(id), Ok(rt)) = (self.id, tokio::runtime::Handle::try_current()) {
            let client = self.client.clone();
            rt.spawn(async move {
                let _ = client
                    .call::<Value, Value>("event.unsubscribe", json!({"subscription": id}))
                    .await;
            });
        }
    }
}
