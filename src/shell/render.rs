//! How the shell shows results: aligned key/value lists and tables, power
//! states in colour when stdout is a terminal, the supervision tree drawn.

use serde_json::Value;

/// ANSI colour of a power state (or supervisor or task state), when colour is on.
fn paint(text: &str, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match text {
        "Running" | "running" => "32",  // green
        "Paused" | "Suspended" => "33", // yellow
        "Crashed" | "stopped" => "31",  // red
        "Halted" => "2",                // dim
        "Connected" => "32",
        "success" => "32",
        "pending" | "cancelling" => "33",
        "failure" => "31",
        "cancelled" => "2",
        _ => return text.to_owned(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A value as a table cell: strings bare, null as "-".
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligned `key  value` lines.
pub fn kv(rows: &[(&str, String)], color: bool) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {}", paint(v, color)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An aligned table; colour applies to cells that are states.
pub fn table(headers: &[&str], rows: &[Vec<String>], color: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>, paint_cells: bool| {
        let last = cells.len().saturating_sub(1);
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                let shown = if paint_cells { paint(&c, color) } else { c };
                if i == last {
                    shown
                } else {
                    format!("{shown}{}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(
        headers.iter().map(|h| (*h).to_owned()).collect(),
        false,
    )];
    out.extend(rows.iter().map(|r| line(r.clone(), true)));
    out.join("\n")
}

/// `vm.list`.
pub fn vm_list(v: &Value, color: bool) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|vm| {
                    vec![
                        cell(&vm["name"]),
                        cell(&vm["power_state"]),
                        cell(&vm["domid"]),
                        cell(&vm["uuid"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["NAME", "POWER", "DOMID", "UUID"], &rows, color)
}

/// `vm.get`.
pub fn vm_get(v: &Value, color: bool) -> String {
    let mut rows = vec![
        ("name", cell(&v["name"])),
        ("uuid", cell(&v["uuid"])),
        ("power_state", cell(&v["power_state"])),
        ("domid", cell(&v["domid"])),
        ("type", cell(&v["type"])),
        ("memory_mib", cell(&v["memory_mib"])),
        ("vcpus", cell(&v["vcpus"])),
    ];
    if !v["operation"].is_null() {
        rows.push(("operation", cell(&v["operation"])));
    }
    let g = &v["guest"];
    rows.push((
        "guest agent",
        if g["agent"] == true { "yes" } else { "no" }.to_owned(),
    ));
    for (k, key) in [
        ("os", "os_name"),
        ("distro", "os_distro"),
        ("kernel", "os_uname"),
    ] {
        if !g[key].is_null() {
            rows.push((k, cell(&g[key])));
        }
    }
    if let Some(ips) = g["ips"].as_object() {
        for (k, ip) in ips {
            rows.push(("ip", format!("{} ({k})", cell(ip))));
        }
    }
    if !v["emulator"].is_null() {
        rows.push((
            "emulator",
            format!(
                "pid {} {}",
                cell(&v["emulator"]["pid"]),
                cell(&v["emulator"]["status"])
            ),
        ));
    }
    let mut out = kv(&rows, color);
    let devices: Vec<Vec<String>> = ["vbds", "vifs"]
        .iter()
        .flat_map(|kind| {
            v[*kind]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |d| {
                    vec![
                        kind.trim_end_matches('s').to_owned(),
                        cell(&d["device"]),
                        cell(&d["state"]),
                        if d["mac"].is_null() {
                            String::new()
                        } else {
                            cell(&d["mac"])
                        },
                    ]
                })
        })
        .collect();
    if !devices.is_empty() {
        out.push_str("\n\n");
        out.push_str(&table(&["KIND", "DEVICE", "STATE", "MAC"], &devices, color));
    }
    out
}

/// `host.info`.
pub fn host_info(v: &Value, color: bool) -> String {
    let keys = [
        "hostname",
        "hypervisor",
        "xen_version",
        "total_mib",
        "free_mib",
        "cpus",
        "vms",
    ];
    let rows: Vec<(&str, String)> = keys.iter().map(|k| (*k, cell(&v[*k]))).collect();
    kv(&rows, color)
}

/// `host.devices`: two tables.
pub fn host_devices(v: &Value, color: bool) -> String {
    let loops: Vec<Vec<String>> = v["loop_devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| vec![cell(&l["device"]), cell(&l["backing"])])
                .collect()
        })
        .unwrap_or_default();
    let ifaces: Vec<Vec<String>> = v["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    vec![
                        cell(&i["name"]),
                        if i["up"] == true { "up" } else { "down" }.to_owned(),
                        cell(&i["bridge"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}\n\n{}",
        table(&["LOOP DEVICE", "BACKING FILE"], &loops, color),
        table(&["INTERFACE", "LINK", "BRIDGE"], &ifaces, color)
    )
}

/// `supervisor.tree`, drawn.
pub fn tree(node: &Value, color: bool) -> String {
    fn label(n: &Value, color: bool) -> String {
        let mut s = format!(
            "{} ({}) {}",
            cell(&n["id"]),
            cell(&n["kind"]),
            paint(&cell(&n["state"]), color)
        );
        let restarts = n["restarts"].as_u64().unwrap_or(0);
        if restarts > 0 {
            s.push_str(&format!(
                ", {restarts} restart{}",
                if restarts == 1 { "" } else { "s" }
            ));
        }
        if let Some(e) = n["last_exit"].as_str() {
            s.push_str(&format!(", last exit: {e}"));
        } else if let Some(e) = n["last_exit"].as_object() {
            let kind = e.get("kind").map(cell).unwrap_or_default();
            match e.get("detail") {
                Some(d) => s.push_str(&format!(", last exit: {kind}: {}", cell(d))),
                None => s.push_str(&format!(", last exit: {kind}")),
            }
        }
        s
    }
    fn walk(n: &Value, prefix: &str, out: &mut Vec<String>, color: bool) {
        let children = n["children"].as_array().cloned().unwrap_or_default();
        for (i, child) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            out.push(format!(
                "{prefix}{}{}",
                if last { "└── " } else { "├── " },
                label(child, color)
            ));
            walk(
                child,
                &format!("{prefix}{}", if last { "    " } else { "│   " }),
                out,
                color,
            );
        }
    }
    let mut out = vec![label(node, color)];
    walk(node, "", &mut out, color);
    out.join("\n")
}

/// One event, on one line: `seq class kind id key=value...`.
pub fn event(e: &Value, color: bool) -> String {
    let mut s = format!(
        "{:>6} {:<10} {:<3} {}",
        cell(&e["seq"]),
        cell(&e["class"]),
        cell(&e["kind"]),
        cell(&e["id"])
    );
    if let Some(snap) = e["snapshot"].as_object() {
        for (k, v) in snap {
            if k == "uuid" || k == "vm" {
                continue;
            }
            let shown = cell(v);
            let shown = if k == "power_state" || k == "state" {
                paint(&shown, color)
            } else {
                shown
            };
            s.push_str(&format!(" {k}={shown}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_colour_only_states() {
        let v = json!([
            {"name": "web", "power_state": "Running", "domid": 3, "uuid": "u1"},
            {"name": "database", "power_state": "Halted", "domid": null, "uuid": "u2"},
        ]);
        assert_eq!(
            vm_list(&v, false),
            "NAME      POWER    DOMID  UUID\nweb       Running  3      u1\ndatabase  Halted   -      u2"
        );
        let coloured = vm_list(&v, true);
        assert!(
            coloured.contains("\x1b[32mRunning\x1b[0m  3"),
            "{coloured:?}"
        );
        assert!(!coloured.contains("\x1b[32mweb"), "{coloured:?}");
    }

    #[test]
    fn the_tree_is_drawn_with_restarts_and_exits() {
        let t = json!({"id": "root", "kind": "supervisor", "state": "running", "restarts": 0, "last_exit": null,
        "children": [
            {"id": "host", "kind": "worker", "state": "running", "restarts": 2,
             "last_exit": {"kind": "panic", "detail": "boom"}, "children": []},
            {"id": "rpc", "kind": "worker", "state": "running", "restarts": 0, "last_exit": null, "children": []}
        ]});
        assert_eq!(
            tree(&t, false),
            "root (supervisor) running\n├── host (worker) running, 2 restarts, last exit: panic: boom\n└── rpc (worker) running"
        );
    }
}
