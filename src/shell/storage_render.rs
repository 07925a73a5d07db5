//! How the storage and task commands show their results: SR, VDI and task
//! tables and details, sizes in MiB or GiB, progress in percent.

use std::collections::HashMap;

use serde_json::Value;

use super::render::{cell, kv, table};
use super::storage::human_size;

/// A size in MiB for people; "-" when unknown.
pub fn size(v: &Value) -> String {
    v.as_u64().map_or_else(|| cell(v), human_size)
}

/// A task's progress (0.0..1.0) in whole percent (rounded down).
pub fn percent(v: &Value) -> String {
    match v.as_f64() {
        Some(p) => format!("{:.0}%", (p * 100.0).clamp(0.0, 100.0).floor()),
        None => cell(v),
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn yes(v: &Value) -> String {
    if v == true { "yes" } else { "no" }.to_owned()
}

/// SR uuids to names, from an `sr.list` reply (anything else: none).
pub fn sr_names(srs: &Value) -> HashMap<String, String> {
    items(srs)
        .iter()
        .filter_map(|s| {
            Some((
                s["uuid"].as_str()?.to_owned(),
                s["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// An SR as its name when known, else as it came.
fn sr_name(sr: &Value, names: &HashMap<String, String>) -> String {
    sr.as_str()
        .and_then(|u| names.get(u).cloned())
        .unwrap_or_else(|| cell(sr))
}

/// `sr.list`; a FAULT column only when an SR cannot be reached.
pub fn sr_list(v: &Value, color: bool) -> String {
    let faults = items(v).iter().any(|s| !s["fault"].is_null());
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|s| {
            let mut row = vec![
                cell(&s["name"]),
                cell(&s["type"]),
                size(&s["size_mib"]),
                size(&s["free_mib"]),
                cell(&s["vdis"]),
                cell(&s["uuid"]),
            ];
            if faults {
                row.push(cell(&s["fault"]));
            }
            row
        })
        .collect();
    let mut headers = vec!["NAME", "TYPE", "SIZE", "FREE", "VDIS", "UUID"];
    if faults {
        headers.push("FAULT");
    }
    table(&headers, &rows, color)
}

/// `sr.get`: the SR, then its VDIs.
pub fn sr_get(v: &Value, color: bool) -> String {
    let mut rows = vec![
        ("name", cell(&v["name"])),
        ("uuid", cell(&v["uuid"])),
        ("type", cell(&v["type"])),
    ];
    if let Some(config) = v["config"].as_object() {
        for (k, c) in config {
            rows.push((k.as_str(), cell(c)));
        }
    }
    rows.push(("size", size(&v["size_mib"])));
    rows.push(("free", size(&v["free_mib"])));
    if !v["fault"].is_null() {
        rows.push(("fault", cell(&v["fault"])));
    }
    let vdis = items(&v["vdis"]);
    rows.push(("vdis", vdis.len().to_string()));
    let mut out = kv(&rows, color);
    if !vdis.is_empty() {
        let rows: Vec<Vec<String>> = vdis
            .iter()
            .map(|d| vec![cell(&d["name"]), cell(&d["uuid"])])
            .collect();
        out.push_str("\n\n");
        out.push_str(&table(&["VDI", "UUID"], &rows, color));
    }
    out
}

/// `sr.scan`: one line per VDI added, missing or changed.
pub fn sr_scan(v: &Value) -> String {
    let lines: Vec<Vec<String>> = ["added", "missing", "changed"]
        .iter()
        .flat_map(|what| {
            items(&v[*what])
                .iter()
                .map(|d| vec![(*what).to_owned(), cell(&d["name"]), cell(&d["uuid"])])
        })
        .collect();
    if lines.is_empty() {
        return "no changes".to_owned();
    }
    table(&["CHANGE", "VDI", "UUID"], &lines, false)
}

/// `vdi.list`, its SRs by name (from `srs`, an `sr.list` reply).
pub fn vdi_list(v: &Value, srs: &Value, color: bool) -> String {
    let names = sr_names(srs);
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|d| {
            let mut flags = Vec::new();
            if d["read_only"] == true {
                flags.push("ro");
            }
            if !d["snapshot_of"].is_null() {
                flags.push("snapshot");
            }
            if d["attached"].as_u64().unwrap_or(0) > 0 {
                flags.push("attached");
            }
            vec![
                cell(&d["name"]),
                sr_name(&d["sr"], &names),
                cell(&d["format"]),
                size(&d["size_mib"]),
                if flags.is_empty() {
                    "-".to_owned()
                } else {
                    flags.join(",")
                },
                cell(&d["uuid"]),
            ]
        })
        .collect();
    table(
        &["NAME", "SR", "FORMAT", "SIZE", "FLAGS", "UUID"],
        &rows,
        color,
    )
}

/// `vdi.get`, its SR by name (from `srs`), then the VMs using it.
pub fn vdi_get(v: &Value, srs: &Value, color: bool) -> String {
    let names = sr_names(srs);
    let mut rows = vec![
        ("name", cell(&v["name"])),
        ("uuid", cell(&v["uuid"])),
        ("sr", sr_name(&v["sr"], &names)),
        ("format", cell(&v["format"])),
        ("size", size(&v["size_mib"])),
        ("physical", size(&v["physical_mib"])),
        ("read_only", yes(&v["read_only"])),
        ("snapshot_of", cell(&v["snapshot_of"])),
        ("parent", cell(&v["parent"])),
    ];
    if !v["location"].is_null() {
        rows.push(("location", cell(&v["location"])));
    }
    if !v["pending"].is_null() {
        rows.push(("pending", cell(&v["pending"])));
    }
    if v["missing"] == true {
        rows.push(("missing", "yes (its volume is gone)".to_owned()));
    }
    let attached = items(&v["attached"]);
    let mut out = kv(&rows, color);
    if !attached.is_empty() {
        let rows: Vec<Vec<String>> = attached
            .iter()
            .map(|a| vec![cell(&a["vm"]), cell(&a["device"]), cell(&a["mode"])])
            .collect();
        out.push_str("\n\n");
        out.push_str(&table(&["VM", "DEVICE", "MODE"], &rows, color));
    }
    out
}

/// `task.list`.
pub fn task_list(v: &Value, color: bool) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|t| {
            vec![
                cell(&t["uuid"]),
                cell(&t["method"]),
                cell(&t["status"]),
                percent(&t["progress"]),
            ]
        })
        .collect();
    table(&["UUID", "METHOD", "STATUS", "PROGRESS"], &rows, color)
}

/// A task's result for people: the uuid it made, else its JSON.
pub fn task_result(v: &Value) -> String {
    match v {
        Value::Object(o) if o.is_empty() => "-".to_owned(),
        Value::Object(o) if o.len() == 1 && o.contains_key("uuid") => cell(&v["uuid"]),
        Value::Null | Value::String(_) => cell(v),
        other => other.to_string(),
    }
}

/// A task's error (`{code, message, details}`), as other errors are shown.
pub fn task_error(e: &Value) -> String {
    let Some(code) = e["code"].as_str() else {
        return cell(e);
    };
    let details: Vec<String> = items(&e["details"]).iter().map(cell).collect();
    if details.is_empty() {
        format!("{code}: {}", cell(&e["message"]))
    } else {
        format!("{code}: {} ({})", cell(&e["message"]), details.join(", "))
    }
}

/// `task.get`.
pub fn task_get(v: &Value, color: bool) -> String {
    let mut rows = vec![
        ("uuid", cell(&v["uuid"])),
        ("method", cell(&v["method"])),
        ("status", cell(&v["status"])),
        ("progress", percent(&v["progress"])),
        ("created", cell(&v["created"])),
        ("finished", cell(&v["finished"])),
    ];
    if !v["result"].is_null() {
        rows.push(("result", task_result(&v["result"])));
    }
    if !v["error"].is_null() {
        rows.push(("error", task_error(&v["error"])));
    }
    kv(&rows, color)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn srs() -> Value {
        json!([
            {"uuid": "s1", "name": "local", "type": "file", "size_mib": 20480, "free_mib": 900, "vdis": 2},
            {"uuid": "s2", "name": "thin", "type": "lvm", "size_mib": 1536, "free_mib": 1536, "vdis": 0},
        ])
    }

    #[test]
    fn sr_tables_show_sizes_for_people() {
        assert_eq!(
            sr_list(&srs(), false),
            "NAME   TYPE  SIZE      FREE     VDIS  UUID\n\
             local  file  20.0 GiB  900 MiB  2     s1\n\
             thin   lvm   1.5 GiB   1.5 GiB  0     s2"
        );
        let faulty = json!([{"uuid": "s1", "name": "gone", "type": "lvm", "size_mib": 0,
                             "free_mib": 0, "vdis": 1, "fault": "vg0: not found"}]);
        assert_eq!(
            sr_list(&faulty, false),
            "NAME  TYPE  SIZE   FREE   VDIS  UUID  FAULT\ngone  lvm   0 MiB  0 MiB  1     s1    vg0: not found"
        );
        assert_eq!(
            sr_list(&json!([]), false),
            "NAME  TYPE  SIZE  FREE  VDIS  UUID"
        );
        let got = json!({"uuid": "s1", "name": "local", "type": "file", "config": {"path": "/srv/sr"},
                         "size_mib": 20480, "free_mib": 900,
                         "vdis": [{"uuid": "v1", "name": "root"}]});
        assert_eq!(
            sr_get(&got, false),
            "name  local\nuuid  s1\ntype  file\npath  /srv/sr\nsize  20.0 GiB\nfree  900 MiB\nvdis  1\n\n\
             VDI   UUID\nroot  v1"
        );
    }

    #[test]
    fn scans_list_what_changed() {
        assert_eq!(
            sr_scan(&json!({"added": [], "missing": [], "changed": []})),
            "no changes"
        );
        assert_eq!(
            sr_scan(&json!({"added": [{"uuid": "v1", "name": "new"}],
                            "missing": [{"uuid": "v2", "name": "gone"}], "changed": []})),
            "CHANGE   VDI   UUID\nadded    new   v1\nmissing  gone  v2"
        );
    }

    #[test]
    fn vdi_tables_name_their_srs_and_flags() {
        let vdis = json!([
            {"uuid": "v1", "name": "root", "sr": "s1", "format": "qcow2", "size_mib": 10240,
             "read_only": false, "snapshot_of": null, "attached": 1},
            {"uuid": "v2", "name": "before", "sr": "s1", "format": "qcow2", "size_mib": 10240,
             "read_only": true, "snapshot_of": "v1", "attached": 0},
            {"uuid": "v3", "name": "swap", "sr": "s9", "format": "raw", "size_mib": 512,
             "read_only": false, "snapshot_of": null, "attached": 0},
        ]);
        assert_eq!(
            vdi_list(&vdis, &srs(), false),
            "NAME    SR     FORMAT  SIZE      FLAGS        UUID\n\
             root    local  qcow2   10.0 GiB  attached     v1\n\
             before  local  qcow2   10.0 GiB  ro,snapshot  v2\n\
             swap    s9     raw     512 MiB   -            v3"
        );
        let got = json!({"uuid": "v2", "name": "before", "sr": "s1", "format": "qcow2",
                         "size_mib": 10240, "physical_mib": 3, "read_only": true,
                         "snapshot_of": "v1", "parent": null,
                         "attached": [{"vm": "m1", "device": "xvda", "mode": "ro"}],
                         "location": "v2.qcow2", "adopted": false, "missing": false,
                         "active": 0, "pending": null});
        assert_eq!(
            vdi_get(&got, &Value::Null, false),
            "name         before\nuuid         v2\nsr           s1\nformat       qcow2\n\
             size         10.0 GiB\nphysical     3 MiB\nread_only    yes\nsnapshot_of  v1\n\
             parent       -\nlocation     v2.qcow2\n\n\
             VM  DEVICE  MODE\nm1  xvda    ro"
        );
    }

    #[test]
    fn task_tables_show_progress_results_and_errors() {
        let tasks = json!([
            {"uuid": "t1", "method": "vdi.copy", "status": "pending", "progress": 0.425},
            {"uuid": "t2", "method": "vdi.export", "status": "success", "progress": 1.0},
        ]);
        assert_eq!(
            task_list(&tasks, false),
            "UUID  METHOD      STATUS   PROGRESS\nt1    vdi.copy    pending  42%\nt2    vdi.export  success  100%"
        );
        assert!(task_list(&tasks, true).contains("\x1b[32msuccess\x1b[0m"));
        let done = json!({"uuid": "t1", "method": "vdi.copy", "status": "success", "progress": 1.0,
                          "created": "2025-01-01T00:00:00Z", "finished": "2025-01-01T00:00:05Z",
                          "result": {"uuid": "v9"}, "error": null, "cancellable": false});
        assert_eq!(
            task_get(&done, false),
            "uuid      t1\nmethod    vdi.copy\nstatus    success\nprogress  100%\n\
             created   2025-01-01T00:00:00Z\nfinished  2025-01-01T00:00:05Z\nresult    v9"
        );
        let failed = json!({"uuid": "t2", "method": "vdi.import", "status": "failure",
                            "progress": 0.1, "created": "c", "finished": null, "result": null,
                            "error": {"code": "SR_FULL", "message": "no room",
                                      "details": ["local", "100", "50"]}});
        assert!(
            task_get(&failed, false)
                .ends_with("finished  -\nerror     SR_FULL: no room (local, 100, 50)"),
            "{}",
            task_get(&failed, false)
        );
        assert_eq!(
            task_error(&json!({"code": "TASK_CANCELLED", "message": "cancelled", "details": []})),
            "TASK_CANCELLED: cancelled"
        );
        assert_eq!(task_result(&json!({})), "-");
        assert_eq!(percent(&json!(0.999)), "99%", "not done until done");
        assert_eq!(percent(&Value::Null), "-");
    }
}
