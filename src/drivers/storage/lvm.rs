//! The `lvm` SR: a volume group with a thin pool (Debian's lvm2); a VDI is
//! a thin LV in the pool, raw. Snapshots and clones are thin snapshots
//! (O(1): they share the pool's blocks); a snapshot is read-only, a clone
//! a writable snapshot of a snapshot. Thin snapshots carry LVM's
//! activation-skip flag, so attaching activates with `-K`.
//!
//! Every LVM command runs as `lvm COMMAND` with JSON reports
//! (`--reportformat json`); the command lines are built by pure functions
//! and the reports read by [`parse_lvs`] and [`parse_vgs`], tested without
//! a kernel (the CI machine has no device-mapper; the bed's dom0 does).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::tool::{convert, StorageTools};
use super::{Attached, Job, SrDriver, SrType, StorageError, Usage, VdiFormat, Volume};

/// The tag xenith puts on the LVs it makes.
pub const TAG: &str = "xenith";

/// A volume group's thin pool.
#[derive(Debug, Clone)]
pub struct LvmSr {
    vg: String,
    pool: String,
    /// The device to make the group on (when xenith makes it).
    device: Option<PathBuf>,
    tools: StorageTools,
}

/// One LV of an `lvs` report.
#[derive(Debug, Clone, PartialEq)]
pub struct Lv {
    pub name: String,
    pub size_bytes: u64,
    pub pool: String,
    pub origin: String,
    /// lv_attr: volume type, permissions, ... (`Vwi-a-tz--`).
    pub attr: String,
    pub data_percent: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct LvSection {
    #[serde(default)]
    lv: Vec<LvRow>,
}

#[derive(Debug, Deserialize)]
struct LvRow {
    lv_name: String,
    lv_size: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    lv_attr: String,
    #[serde(default)]
    data_percent: String,
}

#[derive(Debug, Deserialize)]
struct VgSection {
    #[serde(default)]
    vg: Vec<VgRow>,
}

#[derive(Debug, Deserialize)]
struct VgRow {
    vg_name: String,
    vg_size: String,
    vg_free: String,
}

fn bytes(tool: &'static str, field: &str, v: &str) -> Result<u64, StorageError> {
    // `--units b --nosuffix` prints plain byte counts.
    v.trim().parse().map_err(|_| StorageError::Output {
        tool,
        message: format!("{field} {v:?} is not a byte count"),
    })
}

/// The LVs of an `lvs --reportformat json --units b --nosuffix -o
/// lv_name,lv_size,pool_lv,origin,lv_attr,data_percent` report.
pub fn parse_lvs(json: &str) -> Result<Vec<Lv>, StorageError> {
    let r: Report<LvSection> = serde_json::from_str(json).map_err(|e| StorageError::Output {
        tool: "lvm",
        message: format!("lvs report: {e}"),
    })?;
    let mut out = Vec::new();
    for row in r.report.into_iter().flat_map(|s| s.lv) {
        out.push(Lv {
            size_bytes: bytes("lvm", "lv_size", &row.lv_size)?,
            name: row.lv_name,
            pool: row.pool_lv,
            origin: row.origin,
            attr: row.lv_attr,
            data_percent: row.data_percent.trim().parse().ok(),
        });
    }
    Ok(out)
}

/// (size, free) of the group in a `vgs --reportformat json --units b
/// --nosuffix -o vg_name,vg_size,vg_free` report.
pub fn parse_vgs(json: &str, vg: &str) -> Result<Option<(u64, u64)>, StorageError> {
    let r: Report<VgSection> = serde_json::from_str(json).map_err(|e| StorageError::Output {
        tool: "lvm",
        message: format!("vgs report: {e}"),
    })?;
    for row in r.report.into_iter().flat_map(|s| s.vg) {
        if row.vg_name == vg {
            return Ok(Some((
                bytes("lvm", "vg_size", &row.vg_size)?,
                bytes("lvm", "vg_free", &row.vg_free)?,
            )));
        }
    }
    Ok(None)
}

/// The command lines (each after `lvm`).
pub mod cmd {
    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    pub fn pvcreate(device: &str) -> Vec<String> {
        // No --yes: a device holding a file system or another group is
        // refused (lvm2 asks, stdin is closed, it answers no).
        s(&["pvcreate", device])
    }

    pub fn vgcreate(vg: &str, device: &str) -> Vec<String> {
        s(&["vgcreate", "--addtag", super::TAG, vg, device])
    }

    pub fn vgs(vg: &str) -> Vec<String> {
        s(&[
            "vgs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_name,vg_size,vg_free",
            vg,
        ])
    }

    pub fn lvs(vg: &str) -> Vec<String> {
        s(&[
            "lvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_name,lv_size,pool_lv,origin,lv_attr,data_percent",
            vg,
        ])
    }

    pub fn thin_pool(vg: &str, pool: &str) -> Vec<String> {
        s(&[
            "lvcreate",
            "--yes",
            "--type",
            "thin-pool",
            "--extents",
            "90%FREE",
            "--name",
            pool,
            vg,
        ])
    }

    pub fn thin_volume(vg: &str, pool: &str, name: &str, bytes: u64) -> Vec<String> {
        let size = format!("{bytes}b");
        let pool = format!("{vg}/{pool}");
        s(&[
            "lvcreate",
            "--yes",
            "--thin",
            &pool,
            "--virtualsize",
            &size,
            "--name",
            name,
            "--addtag",
            super::TAG,
        ])
    }

    pub fn snapshot(vg: &str, of: &str, name: &str, writable: bool) -> Vec<String> {
        let origin = format!("{vg}/{of}");
        let perm = if writable { "rw" } else { "r" };
        s(&[
            "lvcreate",
            "--yes",
            "--snapshot",
            "--permission",
            perm,
            "--name",
            name,
            "--addtag",
            super::TAG,
            &origin,
        ])
    }

    pub fn extend(vg: &str, lv: &str, bytes: u64) -> Vec<String> {
        let size = format!("{bytes}b");
        let lv = format!("{vg}/{lv}");
        s(&["lvextend", "--size", &size, &lv])
    }

    pub fn remove(vg: &str, lv: &str) -> Vec<String> {
        let lv = format!("{vg}/{lv}");
        s(&["lvremove", "--yes", &lv])
    }

    pub fn activate(vg: &str, lv: &str, on: bool) -> Vec<String> {
        let lv = format!("{vg}/{lv}");
        if on {
            // -K: thin snapshots skip activation unless told.
            s(&["lvchange", "--activate", "y", "--ignoreactivationskip", &lv])
        } else {
            s(&["lvchange", "--activate", "n", &lv])
        }
    }

    pub fn vgremove(vg: &str) -> Vec<String> {
        s(&["vgremove", "--yes", vg])
    }

    pub fn pvremove(device: &str) -> Vec<String> {
        s(&["pvremove", "--yes", device])
    }
}

impl LvmSr {
    pub fn new(vg: String, pool: String, device: Option<PathBuf>, tools: StorageTools) -> Self {
        Self {
            vg,
            pool,
            device,
            tools,
        }
    }

    fn lvm(&self, args: Vec<String>) -> Result<String, StorageError> {
        self.tools.lvm.run(&args)
    }

    fn vg_space(&self) -> Result<Option<(u64, u64)>, StorageError> {
        match self.lvm(cmd::vgs(&self.vg)) {
            Ok(out) => parse_vgs(&out, &self.vg),
            Err(StorageError::Tool { message, .. }) if message.contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lvs(&self) -> Result<Vec<Lv>, StorageError> {
        parse_lvs(&self.lvm(cmd::lvs(&self.vg))?)
    }

    fn device_path(&self, loc: &str) -> PathBuf {
        Path::new("/dev").join(&self.vg).join(loc)
    }

    fn raw_only(format: VdiFormat) -> Result<(), StorageError> {
        match format {
            VdiFormat::Raw => Ok(()),
            VdiFormat::Qcow2 => Err(StorageError::Unsupported(
                "an lvm SR holds raw VDIs (thin LVs); qcow2 is for file SRs".into(),
            )),
        }
    }
}

impl SrDriver for LvmSr {
    fn kind(&self) -> SrType {
        SrType::Lvm
    }

    fn prepare(&self) -> Result<(), StorageError> {
        if self.vg_space()?.is_none() {
            let Some(device) = &self.device else {
                return Err(StorageError::Unsupported(format!(
                    "there is no volume group {} (give a device to make one on)",
                    self.vg
                )));
            };
            let device = device.to_string_lossy();
            self.lvm(cmd::pvcreate(&device))?;
            if let Err(e) = self.lvm(cmd::vgcreate(&self.vg, &device)) {
                let _ = self.lvm(cmd::pvremove(&device));
                return Err(e);
            }
        }
        if !self.lvs()?.iter().any(|lv| lv.name == self.pool) {
            self.lvm(cmd::thin_pool(&self.vg, &self.pool))?;
        }
        Ok(())
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        let pool = self
            .lvs()?
            .into_iter()
            .find(|lv| lv.name == self.pool)
            .ok_or_else(|| {
                StorageError::Unsupported(format!("{} has no thin pool {}", self.vg, self.pool))
            })?;
        let used = pool.data_percent.unwrap_or(0.0).clamp(0.0, 100.0) / 100.0;
        // Below 2^53: exact enough for a percentage of a pool.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let used_bytes = (pool.size_bytes as f64 * used) as u64;
        Ok(Usage {
            size_bytes: pool.size_bytes,
            free_bytes: pool.size_bytes.saturating_sub(used_bytes),
        })
    }

    fn volumes(&self) -> Result<Vec<Volume>, StorageError> {
        let mut out: Vec<Volume> = self
            .lvs()?
            .into_iter()
            .filter(|lv| lv.pool == self.pool)
            .map(|lv| Volume {
                read_only: lv.attr.chars().nth(1) == Some('r'),
                backing: (!lv.origin.is_empty()).then_some(lv.origin),
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                physical_bytes: (lv.size_bytes as f64 * lv.data_percent.unwrap_or(0.0) / 100.0)
                    as u64,
                location: lv.name,
                format: VdiFormat::Raw,
                virtual_bytes: lv.size_bytes,
                stamp: None,
            })
            .collect();
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    fn formats(&self) -> &'static [VdiFormat] {
        &[VdiFormat::Raw]
    }

    fn create(&self, loc: &str, format: VdiFormat, bytes: u64) -> Result<(), StorageError> {
        Self::raw_only(format)?;
        self.lvm(cmd::thin_volume(&self.vg, &self.pool, loc, bytes))?;
        // Made active; inactive until a backend needs it.
        let _ = self.lvm(cmd::activate(&self.vg, loc, false));
        Ok(())
    }

    fn destroy(&self, loc: &str) -> Result<(), StorageError> {
        match self.lvm(cmd::remove(&self.vg, loc)) {
            Ok(_) => Ok(()),
            Err(StorageError::Tool { message, .. })
                if message.contains("not found") || message.contains("Failed to find") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn resize(&self, loc: &str, format: VdiFormat, bytes: u64) -> Result<(), StorageError> {
        Self::raw_only(format)?;
        self.lvm(cmd::extend(&self.vg, loc, bytes)).map(drop)
    }

    fn snapshot(&self, live: &str, snap: &str, format: VdiFormat) -> Result<(), StorageError> {
        Self::raw_only(format)?;
        self.lvm(cmd::snapshot(&self.vg, live, snap, false))
            .map(drop)
    }

    fn finish_snapshot(
        &self,
        _live: &str,
        _snap: &str,
        _format: VdiFormat,
    ) -> Result<(), StorageError> {
        // One lvcreate: a snapshot is there whole or not at all.
        Ok(())
    }

    fn clone_of(&self, base: &str, new: &str, format: VdiFormat) -> Result<(), StorageError> {
        Self::raw_only(format)?;
        self.lvm(cmd::snapshot(&self.vg, base, new, true)).map(drop)
    }

    fn copy_in(
        &self,
        from: &Path,
        from_format: VdiFormat,
        loc: &str,
        format: VdiFormat,
        bytes: u64,
        job: &Job,
    ) -> Result<(), StorageError> {
        Self::raw_only(format)?;
        self.lvm(cmd::thin_volume(&self.vg, &self.pool, loc, bytes))?;
        let result = self
            .attach(loc, format)
            .and_then(|a| convert(&self.tools, from, from_format, &a.path, format, true, job));
        let _ = self.detach(loc);
        if result.is_err() {
            let _ = self.destroy(loc);
        }
        result
    }

    fn path(&self, loc: &str) -> PathBuf {
        self.device_path(loc)
    }

    fn attach(&self, loc: &str, format: VdiFormat) -> Result<Attached, StorageError> {
        self.lvm(cmd::activate(&self.vg, loc, true))?;
        Ok(Attached {
            path: self.device_path(loc),
            format,
            block: true,
        })
    }

    fn detach(&self, loc: &str) -> Result<(), StorageError> {
        self.lvm(cmd::activate(&self.vg, loc, false)).map(drop)
    }

    fn check(&self, loc: &str, _format: VdiFormat) -> Result<(), StorageError> {
        if self
            .lvs()?
            .iter()
            .any(|lv| lv.name == loc && lv.pool == self.pool)
        {
            Ok(())
        } else {
            Err(StorageError::Unsupported(format!(
                "no thin LV {loc} in {}",
                self.vg
            )))
        }
    }

    fn remove(&self) -> Result<(), StorageError> {
        // A group xenith made goes with its SR; an existing one stays.
        if let Some(device) = &self.device {
            if self.vg_space()?.is_some() {
                self.lvm(cmd::vgremove(&self.vg))?;
            }
            self.lvm(cmd::pvremove(&device.to_string_lossy()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What lvm2 2.03 (Debian 12) printed for a group with a thin pool, a
    /// thin LV and a read-only thin snapshot of it.
    const LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"vdi-a", "lv_size":"104857600", "pool_lv":"xenith-pool", "origin":"", "lv_attr":"Vwi-a-tz--", "data_percent":"12.50"},
                  {"lv_name":"vdi-s", "lv_size":"104857600", "pool_lv":"xenith-pool", "origin":"vdi-a", "lv_attr":"Vri---tz-k", "data_percent":""},
                  {"lv_name":"xenith-pool", "lv_size":"209715200", "pool_lv":"", "origin":"", "lv_attr":"twi-aotz--", "data_percent":"6.25"},
                  {"lv_name":"root", "lv_size":"4194304", "pool_lv":"", "origin":"", "lv_attr":"-wi-a-----", "data_percent":""}
              ]
          }
      ]
  }"#;

    #[test]
    fn lvs_and_vgs_reports_parse() {
        let lvs = parse_lvs(LVS).unwrap();
        assert_eq!(lvs.len(), 4);
        assert_eq!(lvs[1].origin, "vdi-a");
        assert_eq!(lvs[0].data_percent, Some(12.5));
        assert_eq!(lvs[1].data_percent, None);
        assert_eq!(lvs[2].size_bytes, 209_715_200);
        assert!(parse_lvs("{}").is_err());
        assert!(parse_lvs(r#"{"report":[{"lv":[{"lv_name":"x","lv_size":"12.5m"}]}]}"#).is_err());
        let vgs = r#"{"report":[{"vg":[{"vg_name":"xtest", "vg_size":"264241152", "vg_free":"4194304"}]}]}"#;
        assert_eq!(
            parse_vgs(vgs, "xtest").unwrap(),
            Some((264_241_152, 4_194_304))
        );
        assert_eq!(parse_vgs(vgs, "other").unwrap(), None);
        assert_eq!(parse_vgs(r#"{"report":[{"vg":[]}]}"#, "x").unwrap(), None);
    }

    #[test]
    fn command_lines_are_what_lvm2_takes() {
        assert_eq!(
            cmd::thin_volume("vg0", "xenith-pool", "vdi-1", 10 << 20).join(" "),
            "lvcreate --yes --thin vg0/xenith-pool --virtualsize 10485760b --name vdi-1 --addtag xenith"
        );
        assert_eq!(
            cmd::snapshot("vg0", "vdi-1", "vdi-2", false).join(" "),
            "lvcreate --yes --snapshot --permission r --name vdi-2 --addtag xenith vg0/vdi-1"
        );
        assert_eq!(
            cmd::activate("vg0", "vdi-2", true).join(" "),
            "lvchange --activate y --ignoreactivationskip vg0/vdi-2"
        );
        assert_eq!(
            cmd::pvcreate("/dev/sdb"),
            ["pvcreate", "/dev/sdb"],
            "never --yes"
        );
        assert_eq!(
            cmd::extend("vg0", "v", 1 << 30).join(" "),
            "lvextend --size 1073741824b vg0/v"
        );
    }

    #[test]
    fn the_lvm_tools_accept_these_options() {
        // What runs without a kernel's device-mapper: each command's --help
        // lists every option the driver passes.
        let tools = StorageTools::default();
        let help = |c: &str| {
            tools
                .lvm
                .run(&[c, "--help"])
                .unwrap_or_else(|e| panic!("lvm {c}: {e}"))
        };
        let lvcreate = help("lvcreate");
        for opt in [
            "--thin",
            "--virtualsize",
            "--snapshot",
            "--permission",
            "--addtag",
            "--extents",
            "--type",
        ] {
            assert!(lvcreate.contains(opt), "lvcreate {opt}");
        }
        assert!(help("lvchange").contains("--ignoreactivationskip"));
        assert!(help("lvs").contains("--reportformat"));
        assert!(help("lvextend").contains("--size"));
    }

    #[test]
    fn qcow2_is_refused_plainly() {
        let sr = LvmSr::new("vg".into(), "p".into(), None, StorageTools::default());
        let e = sr.create("x", VdiFormat::Qcow2, 1).unwrap_err();
        assert!(e.to_string().contains("raw VDIs"), "{e}");
    }
}
