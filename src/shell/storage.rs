//! The storage and task commands (`sr`, `vdi`, `task`): their command
//! lines, sizes as people write them, and the RPC call each maps onto
//! (CONTRACT.md "Storage", "Tasks"). Running them is in
//! [`super::storage_exec`], showing their results in
//! [`super::storage_render`].

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum SrVerb {
    /// Every SR, with its size, free space and VDI count.
    List,
    /// One SR in detail, with its VDIs.
    Get { sr: String },
    /// Makes an SR: file (--path DIR) or lvm (--device DEV or --vg VG).
    Create {
        name: String,
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        kind: SrTypeArg,
        /// file: the directory the VDIs are kept in (made if missing).
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// lvm: a block device, made into a new volume group.
        #[arg(long, value_name = "DEV")]
        device: Option<PathBuf>,
        /// lvm: an existing volume group (or the name of the new one).
        #[arg(long, value_name = "VG")]
        vg: Option<String>,
    },
    /// Looks for volumes made or removed behind xenith's back.
    Scan { sr: String },
    /// Destroys an SR and every VDI in it.
    Destroy { sr: String },
    /// Forgets an SR's records, leaving its volumes.
    Forget { sr: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum VdiVerb {
    /// Every VDI (--sr: only those of one SR).
    List {
        #[arg(long, value_name = "SR")]
        sr: Option<String>,
    },
    /// One VDI in detail: format, sizes, snapshot parent, VMs using it.
    Get { vdi: String },
    /// Makes an empty VDI in an SR.
    Create {
        sr: String,
        name: String,
        /// 512, 512M, 512MiB, 10G, 10GiB... (MiB when no unit is given).
        #[arg(long = "size", value_name = "SIZE", value_parser = parse_size)]
        size_mib: u64,
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
    /// Destroys a VDI (not while a VM uses it).
    Destroy { vdi: String },
    /// Grows a VDI to SIZE.
    Resize {
        vdi: String,
        #[arg(long = "size", value_name = "SIZE", value_parser = parse_size)]
        size_mib: u64,
    },
    /// A read-only, point-in-time snapshot of a VDI.
    Snapshot {
        vdi: String,
        #[arg(long, value_name = "N")]
        name: Option<String>,
    },
    /// A writable clone of a VDI, sharing its blocks.
    Clone {
        vdi: String,
        #[arg(long, value_name = "N")]
        name: Option<String>,
    },
    /// A full copy of a VDI into an SR (a task, followed).
    Copy {
        vdi: String,
        #[arg(long, value_name = "SR")]
        sr: String,
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        #[arg(long, value_name = "N")]
        name: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Makes a VDI from an image file (a task, followed).
    Import {
        sr: String,
        path: PathBuf,
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// The file's format (qemu-img's guess when not given).
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Writes a VDI out to an image file (a task, followed).
    Export {
        vdi: String,
        path: PathBuf,
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        #[command(flatten)]
        wait: Wait,
    },
}

/// How a long operation is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::Args)]
pub struct Wait {
    /// Print the task's uuid at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum TaskVerb {
    /// Every task, with its status and progress.
    List,
    /// One task: status, progress, times, result or error.
    Get { task: String },
    /// Stops a copy, import or export under way.
    Cancel { task: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SrTypeArg {
    File,
    Lvm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Qcow2,
    Raw,
}

impl FormatArg {
    pub fn name(self) -> &'static str {
        match self {
            FormatArg::Qcow2 => "qcow2",
            FormatArg::Raw => "raw",
        }
    }
}

/// A size as people write it, in MiB: "512", "512M", "512MiB", "10G",
/// "10GiB", "1.5G", "2T" (MiB when no unit is given; units are binary).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift: u32 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mi" | "mib" => 0,
        "g" | "gi" | "gib" => 10,
        "t" | "ti" | "tib" => 20,
        _ => {
            return Err(format!(
                "{text:?}: the unit is M/MiB, G/GiB or T/TiB (MiB when none)"
            ))
        }
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let bad = || format!("{text:?} is not a size (e.g. 512, 512M, 10G, 10GiB)");
    if whole.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let whole: u128 = whole.parse().map_err(|_| bad())?;
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scale = u32::try_from(frac.len())
        .ok()
        .and_then(|d| 10u128.checked_pow(d))
        .ok_or_else(bad)?;
    let unit_mib = 1u128 << shift;
    let frac_mib = frac_value * unit_mib;
    if frac_mib % scale != 0 {
        return Err(format!("{text:?} is not a whole number of MiB"));
    }
    let mib = whole
        .checked_mul(unit_mib)
        .and_then(|m| m.checked_add(frac_mib / scale))
        .and_then(|m| u64::try_from(m).ok())
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if mib == 0 {
        return Err(format!("{text:?}: a size must be more than 0"));
    }
    Ok(mib)
}

/// A size for people: MiB below 1 GiB, GiB with one decimal from there.
pub fn human_size(mib: u64) -> String {
    if mib < 1024 {
        format!("{mib} MiB")
    } else {
        #[allow(clippy::cast_precision_loss)]
        let gib = mib as f64 / 1024.0;
        format!("{gib:.1} GiB")
    }
}

/// How a storage or task call's result is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    SrList,
    SrGet,
    SrScan,
    VdiList,
    VdiGet,
    TaskList,
    TaskGet,
    /// `task.cancel`: the task's uuid and its status now.
    TaskCancelled,
    /// The new object's uuid.
    Uuid,
    /// This line.
    Said(String),
    /// A long operation, run as a task: followed to its end (then the new
    /// object's uuid, or `said`), or (`no_wait`) just the task's uuid.
    Task {
        no_wait: bool,
        said: Option<String>,
    },
}

/// One storage or task call: the method, its named arguments, and how its
/// result is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: &'static str,
    pub params: Value,
    pub output: Output,
}

fn req(method: &'static str, params: Value, output: Output) -> Result<Request, String> {
    Ok(Request {
        method,
        params,
        output,
    })
}

/// Puts `key` in `params` when there is a value.
fn opt<T: serde::Serialize>(mut params: Value, key: &str, value: Option<T>) -> Value {
    if let Some(v) = value {
        params[key] = json!(v);
    }
    params
}

/// A long operation: `async: true`, followed unless `--no-wait`.
fn long(
    method: &'static str,
    mut params: Value,
    wait: Wait,
    said: Option<String>,
) -> Result<Request, String> {
    params["async"] = json!(true);
    req(
        method,
        params,
        Output::Task {
            no_wait: wait.no_wait,
            said,
        },
    )
}

/// The `sr` commands' calls.
pub fn sr_request(verb: SrVerb) -> Result<Request, String> {
    match verb {
        SrVerb::List => req("sr.list", json!({}), Output::SrList),
        SrVerb::Get { sr } => req("sr.get", json!({"sr": sr}), Output::SrGet),
        SrVerb::Create {
            name,
            kind,
            path,
            device,
            vg,
        } => {
            let (kind, config) = match kind {
                SrTypeArg::File => {
                    if device.is_some() || vg.is_some() {
                        return Err("a file SR takes --path DIR, not --device or --vg".into());
                    }
                    let path = path.ok_or("a file SR needs --path DIR")?;
                    ("file", json!({"path": path}))
                }
                SrTypeArg::Lvm => {
                    if path.is_some() {
                        return Err("an lvm SR takes --device DEV or --vg VG, not --path".into());
                    }
                    if device.is_none() && vg.is_none() {
                        return Err("an lvm SR needs --device DEV or --vg VG".into());
                    }
                    let config = opt(json!({}), "device", device);
                    ("lvm", opt(config, "vg", vg))
                }
            };
            req(
                "sr.create",
                json!({"name": name, "type": kind, "config": config}),
                Output::Uuid,
            )
        }
        SrVerb::Scan { sr } => req("sr.scan", json!({"sr": sr}), Output::SrScan),
        SrVerb::Destroy { sr } => req(
            "sr.destroy",
            json!({"sr": sr}),
            Output::Said(format!("{sr} destroyed")),
        ),
        SrVerb::Forget { sr } => req(
            "sr.forget",
            json!({"sr": sr}),
            Output::Said(format!("{sr} forgotten")),
        ),
    }
}

/// The `vdi` commands' calls.
pub fn vdi_request(verb: VdiVerb) -> Result<Request, String> {
    let format = |f: Option<FormatArg>| f.map(FormatArg::name);
    match verb {
        VdiVerb::List { sr } => req("vdi.list", opt(json!({}), "sr", sr), Output::VdiList),
        VdiVerb::Get { vdi } => req("vdi.get", json!({"vdi": vdi}), Output::VdiGet),
        VdiVerb::Create {
            sr,
            name,
            size_mib,
            format: f,
        } => req(
            "vdi.create",
            opt(
                json!({"sr": sr, "name": name, "size_mib": size_mib}),
                "format",
                format(f),
            ),
            Output::Uuid,
        ),
        VdiVerb::Destroy { vdi } => req(
            "vdi.destroy",
            json!({"vdi": vdi}),
            Output::Said(format!("{vdi} destroyed")),
        ),
        VdiVerb::Resize { vdi, size_mib } => req(
            "vdi.resize",
            json!({"vdi": vdi, "size_mib": size_mib}),
            Output::Said(format!("{vdi} resized to {}", human_size(size_mib))),
        ),
        VdiVerb::Snapshot { vdi, name } => req(
            "vdi.snapshot",
            opt(json!({"vdi": vdi}), "name", name),
            Output::Uuid,
        ),
        VdiVerb::Clone { vdi, name } => req(
            "vdi.clone",
            opt(json!({"vdi": vdi}), "name", name),
            Output::Uuid,
        ),
        VdiVerb::Copy {
            vdi,
            sr,
            format: f,
            name,
            wait,
        } => {
            let p = opt(json!({"vdi": vdi, "sr": sr}), "format", format(f));
            long("vdi.copy", opt(p, "name", name), wait, None)
        }
        VdiVerb::Import {
            sr,
            path,
            name,
            format: f,
            wait,
        } => {
            let p = opt(json!({"sr": sr, "path": path}), "name", name);
            long("vdi.import", opt(p, "format", format(f)), wait, None)
        }
        VdiVerb::Export {
            vdi,
            path,
            format: f,
            wait,
        } => {
            let said = format!("{vdi} exported to {}", path.display());
            let p = opt(json!({"vdi": vdi, "path": path}), "format", format(f));
            long("vdi.export", p, wait, Some(said))
        }
    }
}

/// The `task` commands' calls.
pub fn task_request(verb: TaskVerb) -> Result<Request, String> {
    match verb {
        TaskVerb::List => req("task.list", json!({}), Output::TaskList),
        TaskVerb::Get { task } => req("task.get", json!({"task": task}), Output::TaskGet),
        TaskVerb::Cancel { task } => {
            req("task.cancel", json!({"task": task}), Output::TaskCancelled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, Line, LineCommand};
    use super::*;
    use clap::Parser;

    fn request(s: &str) -> Result<Request, String> {
        let cmd = Line::try_parse_from(s.split_whitespace())
            .map_err(|e| e.to_string())?
            .command;
        match cmd {
            LineCommand::Run(Command::Sr { verb }) => sr_request(verb),
            LineCommand::Run(Command::Vdi { verb }) => vdi_request(verb),
            LineCommand::Run(Command::Task { verb }) => task_request(verb),
            other => Err(format!("not a storage command: {other:?}")),
        }
    }

    fn call(s: &str) -> (&'static str, Value) {
        let r = request(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.method, r.params)
    }

    #[test]
    fn sizes_are_mib_unless_a_unit_says_otherwise() {
        for (text, mib) in [
            ("512", 512),
            ("512M", 512),
            ("512MiB", 512),
            ("512m", 512),
            ("512 MiB", 512),
            ("10G", 10240),
            ("10GiB", 10240),
            ("10g", 10240),
            ("1.5G", 1536),
            ("0.5GiB", 512),
            ("2T", 2 << 20),
            ("1TiB", 1 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(mib), "{text}");
        }
        for bad in [
            "", "0", "0G", "G", "-1", "1.", ".5", "1.2.3", "10K", "10KB", "10GB", "1.0001G", "ten",
            "1x",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was taken");
        }
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("17592186044416T").is_err(), "beyond u64 MiB");
    }

    #[test]
    fn sizes_are_shown_in_mib_then_gib() {
        assert_eq!(human_size(0), "0 MiB");
        assert_eq!(human_size(512), "512 MiB");
        assert_eq!(human_size(1023), "1023 MiB");
        assert_eq!(human_size(1024), "1.0 GiB");
        assert_eq!(human_size(1536), "1.5 GiB");
        assert_eq!(human_size(10240), "10.0 GiB");
    }

    #[test]
    fn sr_command_lines_map_onto_sr_methods() {
        assert_eq!(call("sr list"), ("sr.list", json!({})));
        assert_eq!(call("sr get local"), ("sr.get", json!({"sr": "local"})));
        assert_eq!(
            call("sr create local --type file --path /srv/sr"),
            (
                "sr.create",
                json!({"name": "local", "type": "file", "config": {"path": "/srv/sr"}})
            )
        );
        assert_eq!(
            call("sr create thin --type lvm --vg vg0"),
            (
                "sr.create",
                json!({"name": "thin", "type": "lvm", "config": {"vg": "vg0"}})
            )
        );
        assert_eq!(
            call("sr create thin --type lvm --device /dev/sdb"),
            (
                "sr.create",
                json!({"name": "thin", "type": "lvm", "config": {"device": "/dev/sdb"}})
            )
        );
        for bad in [
            "sr create local --type file",
            "sr create local --type file --path /a --vg v",
            "sr create thin --type lvm",
            "sr create thin --type lvm --path /a --vg v",
            "sr create x --type nfs --path /a",
            "sr create --type file --path /a",
        ] {
            assert!(request(bad).is_err(), "{bad} was taken");
        }
        assert_eq!(call("sr scan local"), ("sr.scan", json!({"sr": "local"})));
        let destroy = request("sr destroy local").unwrap();
        assert_eq!(
            (destroy.method, destroy.output),
            ("sr.destroy", Output::Said("local destroyed".into()))
        );
        assert_eq!(call("sr forget local").0, "sr.forget");
    }

    #[test]
    fn vdi_command_lines_map_onto_vdi_methods() {
        assert_eq!(call("vdi list"), ("vdi.list", json!({})));
        assert_eq!(
            call("vdi list --sr local"),
            ("vdi.list", json!({"sr": "local"}))
        );
        assert_eq!(call("vdi get root"), ("vdi.get", json!({"vdi": "root"})));
        assert_eq!(
            call("vdi create local root --size 10G"),
            (
                "vdi.create",
                json!({"sr": "local", "name": "root", "size_mib": 10240})
            )
        );
        assert_eq!(
            call("vdi create local root --size 512 --format raw"),
            (
                "vdi.create",
                json!({"sr": "local", "name": "root", "size_mib": 512, "format": "raw"})
            )
        );
        assert!(request("vdi create local root").is_err(), "no size");
        assert!(request("vdi create local root --size 10Q").is_err());
        assert!(request("vdi create local root --size 1 --format vmdk").is_err());
        assert_eq!(
            call("vdi destroy root"),
            ("vdi.destroy", json!({"vdi": "root"}))
        );
        let resize = request("vdi resize root --size 20GiB").unwrap();
        assert_eq!(
            (resize.method, resize.params, resize.output),
            (
                "vdi.resize",
                json!({"vdi": "root", "size_mib": 20480}),
                Output::Said("root resized to 20.0 GiB".into())
            )
        );
        assert_eq!(
            call("vdi snapshot root --name before"),
            ("vdi.snapshot", json!({"vdi": "root", "name": "before"}))
        );
        assert_eq!(
            call("vdi snapshot root"),
            ("vdi.snapshot", json!({"vdi": "root"}))
        );
        assert_eq!(
            call("vdi clone root"),
            ("vdi.clone", json!({"vdi": "root"}))
        );
    }

    #[test]
    fn long_vdi_operations_run_as_tasks() {
        let copy = request("vdi copy root --sr other --format raw --name copy").unwrap();
        assert_eq!(
            (copy.method, copy.params, copy.output),
            (
                "vdi.copy",
                json!({"vdi": "root", "sr": "other", "format": "raw", "name": "copy", "async": true}),
                Output::Task {
                    no_wait: false,
                    said: None
                }
            )
        );
        assert!(request("vdi copy root").is_err(), "no --sr");
        let import = request("vdi import local /tmp/a.img --no-wait").unwrap();
        assert_eq!(
            (import.method, import.params, import.output),
            (
                "vdi.import",
                json!({"sr": "local", "path": "/tmp/a.img", "async": true}),
                Output::Task {
                    no_wait: true,
                    said: None
                }
            )
        );
        let export = request("vdi export root /tmp/out.raw --format raw").unwrap();
        assert_eq!(
            (export.method, export.params, export.output),
            (
                "vdi.export",
                json!({"vdi": "root", "path": "/tmp/out.raw", "format": "raw", "async": true}),
                Output::Task {
                    no_wait: false,
                    said: Some("root exported to /tmp/out.raw".into())
                }
            )
        );
    }

    #[test]
    fn task_command_lines_map_onto_task_methods() {
        assert_eq!(call("task list"), ("task.list", json!({})));
        assert_eq!(call("task get t1"), ("task.get", json!({"task": "t1"})));
        let cancel = request("task cancel t1").unwrap();
        assert_eq!(
            (cancel.method, cancel.output),
            ("task.cancel", Output::TaskCancelled)
        );
        assert!(request("task get").is_err());
    }
}
