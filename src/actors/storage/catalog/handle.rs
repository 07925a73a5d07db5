//! The typed handle to storage: what the API and the VMs' actors hold. It
//! reaches the catalog for SRs and each SR's actor for its VDIs; moving a
//! VDI's data between SRs or files (copy, import, export) is done here,
//! with the source held still by its SR for the whole copy.

use std::path::{Path, PathBuf};

use futures_util::future::join_all;

use super::messages::{CreateSr, ListSrs, RemoveSr, ResolveSr};
use super::state::CatalogActor;
use crate::actors::slot::AddrSlot;
use crate::actors::storage::sr::{Lease, Source, SrHandle};
use crate::actors::storage::view::{ScanResult, SrView, VdiView};
use crate::actors::storage::SrError;
use crate::drivers::storage::{Job, StorageTools, VdiFormat};
use crate::storage::{paths_overlap, SrConfig, SrConfigFile, SrType};

/// What the API, the inventory and the domain actors hold of storage.
#[derive(Debug, Clone)]
pub struct StorageHandle {
    slot: AddrSlot<CatalogActor>,
    tools: StorageTools,
    state_dir: PathBuf,
}

impl StorageHandle {
    pub fn new(slot: AddrSlot<CatalogActor>, tools: StorageTools, state_dir: PathBuf) -> Self {
        Self {
            slot,
            tools,
            state_dir,
        }
    }

    async fn catalog(&self) -> Result<actix::Addr<CatalogActor>, SrError> {
        self.slot
            .running(std::time::Duration::from_secs(5))
            .await
            .ok_or(SrError::Unavailable("the storage catalog"))
    }

    async fn ask<M>(&self, msg: M) -> Result<M::Result, SrError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        CatalogActor: actix::Handler<M>,
    {
        self.catalog()
            .await?
            .send(msg)
            .await
            .map_err(|_| SrError::Unavailable("the storage catalog"))
    }

    pub async fn sr_create(
        &self,
        name: String,
        kind: SrType,
        config: SrConfigFile,
    ) -> Result<uuid::Uuid, SrError> {
        self.ask(CreateSr { name, kind, config }).await?
    }

    /// The SR named `key` (its uuid or its name).
    pub async fn sr(&self, key: &str) -> Result<SrHandle, SrError> {
        self.ask(ResolveSr(key.to_owned()))
            .await?
            .ok_or_else(|| SrError::NotFound {
                what: "SR",
                key: key.to_owned(),
            })
    }

    pub async fn srs(&self) -> Result<Vec<SrHandle>, SrError> {
        self.ask(ListSrs).await
    }

    /// Every SR, with its space.
    pub async fn sr_list(&self) -> Result<Vec<SrView>, SrError> {
        let srs = self.srs().await?;
        join_all(srs.iter().map(SrHandle::info))
            .await
            .into_iter()
            .collect()
    }

    pub async fn sr_get(&self, key: &str) -> Result<SrView, SrError> {
        self.sr(key).await?.info().await
    }

    pub async fn sr_scan(&self, key: &str) -> Result<ScanResult, SrError> {
        self.sr(key).await?.scan().await
    }

    pub async fn sr_destroy(&self, key: &str) -> Result<(), SrError> {
        self.ask(RemoveSr {
            key: key.to_owned(),
            keep_volumes: false,
        })
        .await?
    }

    pub async fn sr_forget(&self, key: &str) -> Result<(), SrError> {
        self.ask(RemoveSr {
            key: key.to_owned(),
            keep_volumes: true,
        })
        .await?
    }

    /// The VDI named `key`: its uuid, its name (unique among all SRs'), or
    /// `SR/NAME`.
    pub async fn vdi(&self, key: &str) -> Result<(SrHandle, uuid::Uuid), SrError> {
        let not_found = || SrError::NotFound {
            what: "VDI",
            key: key.to_owned(),
        };
        if key.is_empty() {
            return Err(not_found());
        }
        let (srs, name) = match key.split_once('/') {
            Some((sr, name)) => (vec![self.sr(sr).await?], name),
            None => (self.srs().await?, key),
        };
        let found = join_all(srs.iter().map(|h| h.find(name))).await;
        let mut hits = Vec::new();
        for (h, f) in srs.iter().zip(found) {
            for uuid in f? {
                hits.push((h.clone(), uuid));
            }
        }
        match hits.len() {
            0 => Err(not_found()),
            1 => Ok(hits.remove(0)),
            count => Err(SrError::Ambiguous {
                what: "VDI",
                key: key.to_owned(),
                count,
                hint: ", or as SR/NAME",
            }),
        }
    }

    /// The VDIs of one SR, or of all.
    pub async fn vdi_list(&self, sr: Option<&str>) -> Result<Vec<VdiView>, SrError> {
        let srs = match sr {
            Some(key) => vec![self.sr(key).await?],
            None => self.srs().await?,
        };
        let mut all = Vec::new();
        for list in join_all(srs.iter().map(SrHandle::list)).await {
            all.extend(list?);
        }
        all.sort_by(|a, b| (a.sr, &a.name, a.uuid).cmp(&(b.sr, &b.name, b.uuid)));
        Ok(all)
    }

    pub async fn vdi_get(&self, key: &str) -> Result<VdiView, SrError> {
        let (sr, vdi) = self.vdi(key).await?;
        sr.get(vdi).await
    }

    pub async fn vdi_create(
        &self,
        sr: &str,
        name: String,
        size_mib: u64,
        format: Option<VdiFormat>,
    ) -> Result<uuid::Uuid, SrError> {
        self.sr(sr).await?.create(name, size_mib, format).await
    }

    pub async fn vdi_destroy(&self, key: &str) -> Result<(), SrError> {
        let (sr, vdi) = self.vdi(key).await?;
        sr.destroy(vdi).await
    }

    pub async fn vdi_resize(&self, key: &str, size_mib: u64) -> Result<(), SrError> {
        let (sr, vdi) = self.vdi(key).await?;
        sr.resize(vdi, size_mib).await
    }

    pub async fn vdi_snapshot(
        &self,
        key: &str,
        name: Option<String>,
    ) -> Result<uuid::Uuid, SrError> {
        let (sr, vdi) = self.vdi(key).await?;
        sr.snapshot(vdi, name).await
    }

    pub async fn vdi_clone(&self, key: &str, name: Option<String>) -> Result<uuid::Uuid, SrError> {
        let (sr, vdi) = self.vdi(key).await?;
        sr.clone_vdi(vdi, name).await
    }

    /// A full copy of a VDI into an SR (the same or another).
    pub async fn vdi_copy(
        &self,
        key: &str,
        to_sr: &str,
        format: Option<VdiFormat>,
        name: Option<String>,
        job: Job,
    ) -> Result<uuid::Uuid, SrError> {
        let (src, vdi) = self.vdi(key).await?;
        let dst = self.sr(to_sr).await?;
        let Lease {
            source,
            name: source_name,
            guard,
        } = src.hold(vdi).await?;
        let r = dst
            .copy_in(name.unwrap_or(source_name), format, source, job)
            .await;
        drop(guard);
        src.release(vdi).await;
        r
    }

    /// A new VDI holding a copy of the image file at `path` (raw or qcow2).
    pub async fn vdi_import(
        &self,
        sr: &str,
        path: &Path,
        name: Option<String>,
        format: Option<VdiFormat>,
        job: Job,
    ) -> Result<uuid::Uuid, SrError> {
        let path = absolute("path", path)?;
        let dst = self.sr(sr).await?;
        let (tools, p) = (self.tools.clone(), path.clone());
        let (from_format, virtual_bytes, physical_bytes) =
            crate::drivers::blocking::run(move || -> Result<_, SrError> {
                let (f, size) = crate::drivers::storage::probe_image(&tools, &p)?;
                let allocated =
                    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&p).map_err(
                        |e| crate::drivers::storage::StorageError::Io {
                            what: "read",
                            path: p.clone(),
                            source: e,
                        },
                    )?) * 512;
                Ok((f, size, allocated))
            })
            .await??;
        let name = name.unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned())
        });
        let source = Source {
            describe: format!("file {}", path.display()),
            path,
            format: from_format,
            virtual_bytes,
            physical_bytes,
        };
        dst.copy_in(name, format, source, job).await
    }

    /// Writes a VDI's data to a new file at `path`.
    pub async fn vdi_export(
        &self,
        key: &str,
        path: &Path,
        format: Option<VdiFormat>,
        job: Job,
    ) -> Result<(), SrError> {
        let path = absolute("path", path)?;
        if paths_overlap(&path, &self.state_dir) {
            return Err(SrError::param(
                "path",
                format!("{} is in xenith's state directory", path.display()),
            ));
        }
        for sr in self.sr_list().await? {
            if let SrConfig::File { path: dir } = &sr.config {
                if path.starts_with(dir) {
                    return Err(SrError::param(
                        "path",
                        format!(
                            "{} is inside SR {} (import it there instead)",
                            path.display(),
                            sr.name
                        ),
                    ));
                }
            }
        }
        let (src, vdi) = self.vdi(key).await?;
        let lease = src.hold(vdi).await?;
        let tools = self.tools.clone();
        let from = lease.source.path.clone();
        let from_format = lease.source.format;
        let format = format.unwrap_or(from_format);
        let r = crate::drivers::blocking::run(move || -> Result<(), SrError> {
            match std::fs::symlink_metadata(&path) {
                Ok(_) => {
                    return Err(SrError::param(
                        "path",
                        format!("{} exists: xenith does not overwrite files", path.display()),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(crate::drivers::storage::StorageError::Io {
                        what: "look at",
                        path,
                        source: e,
                    }
                    .into())
                }
            }
            Ok(crate::drivers::storage::export(
                &tools,
                &from,
                from_format,
                &path,
                format,
                &job,
            )?)
        })
        .await
        .map_err(SrError::from)
        .and_then(|r| r);
        drop(lease);
        src.release(vdi).await;
        r
    }
}

/// An absolute path without "." or "..".
fn absolute(field: &str, path: &Path) -> Result<PathBuf, SrError> {
    let text = path.to_string_lossy();
    if !path.is_absolute() || text.split('/').any(|p| p == "." || p == "..") || text.contains('\0')
    {
        return Err(SrError::param(
            field,
            format!("{} is not an absolute path without . or ..", path.display()),
        ));
    }
    Ok(path.to_owned())
}
