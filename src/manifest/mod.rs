//! Reads a site's manifests (`etc/*.json` and `stacks/`) in the seed system's format into
//! typed values, and reports every problem found as a [`Diagnostic`] with file, JSON path,
//! line and column.
//!
//! [`load`] is the only entry point: it reads every file (collecting all errors instead of
//! stopping at the first), warns about keys phoenix does not know, and runs the
//! [`lint`]s. The manifest layer never talks to a provider.

pub mod diagnostic;
pub mod files;
pub mod lint;
pub mod locate;
mod parse;
pub mod schema;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use diagnostic::{Diagnostic, Severity};
pub use locate::Sources;

use files::{
    CERTIFICATES_FILE, CertificateEntry, EnvFile, HYPERVISOR_FILE, HypervisorConfig, LXC_FILE,
    LxcConfig, LxcFile, STACK_COMPOSE, STACK_CONFIGS_DIR, STACK_MANIFEST, STACKS_CONFIG_FILE,
    STACKS_DIR, Stack, StackManifest, StacksConfigFile, VM_FILE, VmConfig, VmFile,
};
use parse::FileKind;

/// Everything a site declares, as read from its manifests.
#[derive(Debug, Clone)]
pub struct Site {
    /// The directory holding `etc/` (and optionally `stacks/`), as given to [`load`].
    pub root: PathBuf,
    /// `etc/phoenix_hypervisor_config.json` (required).
    pub hypervisor: files::HypervisorConfig,
    /// `etc/phoenix_lxc_configs.json` (required).
    pub lxc: files::LxcFile,
    /// `etc/phoenix_vm_configs.json` (required; may be `{"vms": []}`).
    pub vms: files::VmFile,
    /// `etc/phoenix_stacks_config.json` (optional).
    pub stacks_config: Option<files::StacksConfigFile>,
    /// `etc/certificate-manifest.json` (optional, default empty).
    pub certificates: Vec<files::CertificateEntry>,
    /// `stacks/<name>/` directories having both `docker-compose.yml` and `phoenix.json`.
    pub stacks: BTreeMap<String, files::Stack>,
    /// The text of every JSON file read, for locating paths in later diagnostics.
    pub sources: Sources,
}

/// A site that loaded without errors, and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub site: Site,
    /// Warnings only, sorted by file and line.
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} error(s) in the site manifests",
        .diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    )]
    Invalid {
        /// All diagnostics, errors and warnings, sorted by file and line.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Whether a guest id names a container or a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Lxc,
    Vm,
}

impl std::fmt::Display for GuestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuestKind::Lxc => "lxc",
            GuestKind::Vm => "vm",
        })
    }
}

impl Site {
    /// Which kind of guest `id` is, if the site declares it.
    pub fn guest_kind(&self, id: u32) -> Option<GuestKind> {
        if self.lxc(id).is_some() {
            Some(GuestKind::Lxc)
        } else if self.vm(id).is_some() {
            Some(GuestKind::Vm)
        } else {
            None
        }
    }

    /// Guest ids (LXC ctids and VM vmids) in ascending order, and which kind each is.
    pub fn guest_ids(&self) -> Vec<(u32, GuestKind)> {
        let mut ids: Vec<(u32, GuestKind)> = self
            .lxcs()
            .into_iter()
            .map(|(id, _)| (id, GuestKind::Lxc))
            .chain(self.vms.vms.iter().map(|vm| (vm.vmid, GuestKind::Vm)))
            .collect();
        ids.sort();
        ids
    }

    /// Containers in ascending ctid order (the map itself sorts `"1001"` before `"101"`).
    /// Keys that are not ctids are skipped; [`load`] reports them as errors.
    pub fn lxcs(&self) -> Vec<(u32, &LxcConfig)> {
        let mut lxcs: Vec<(u32, &LxcConfig)> = self
            .lxc
            .lxc_configs
            .iter()
            .filter_map(|(key, config)| Some((lint::parse_ctid_key(key).ok()?, config)))
            .collect();
        lxcs.sort_by_key(|(id, _)| *id);
        lxcs
    }

    pub fn lxc(&self, ctid: u32) -> Option<&LxcConfig> {
        self.lxc.lxc_configs.get(&ctid.to_string())
    }

    pub fn vm(&self, vmid: u32) -> Option<&VmConfig> {
        self.vms.vms.iter().find(|vm| vm.vmid == vmid)
    }

    pub fn stack(&self, name: &str) -> Option<&Stack> {
        self.stacks.get(name)
    }
}

/// The largest JSON manifest phoenix reads (the seed's biggest is about 30 KB).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
/// The largest `docker-compose.yml` phoenix reads.
pub const MAX_COMPOSE_BYTES: u64 = 1024 * 1024;

const MINIMAL_HYPERVISOR: &str = r#"a minimal one is {"domain_name": "lab.example.internal", "network": {"interfaces": {"name": "vmbr0", "address": "192.0.2.13/24", "gateway": "192.0.2.1"}}}"#;
const MINIMAL_LXC: &str = r#"a site without containers needs {"lxc_configs": {}}"#;
const MINIMAL_VM: &str = r#"a site without VMs needs {"vms": []}"#;

/// Reads and checks the site under `root`.
///
/// Returns the site and its warnings, or [`ManifestError::Invalid`] with every error and
/// warning found across all files. [`ManifestError::Io`] is only for files that exist but
/// cannot be read.
pub fn load(root: &Path) -> Result<Loaded, ManifestError> {
    let mut diagnostics = Vec::new();
    let mut sources = Sources::default();

    if !root.join("etc").is_dir() {
        return Err(ManifestError::Invalid {
            diagnostics: vec![
                Diagnostic::error(
                    "etc",
                    format!(
                        "no site manifests under {}: there is no etc/ directory",
                        root.display()
                    ),
                )
                .with_help(format!(
                    "point --root at the directory that holds {HYPERVISOR_FILE}"
                )),
            ],
        });
    }

    let mut ctx = Reader {
        root,
        sources: &mut sources,
        diagnostics: &mut diagnostics,
    };
    let hypervisor: Option<HypervisorConfig> =
        ctx.required(HYPERVISOR_FILE, FileKind::Hypervisor, MINIMAL_HYPERVISOR)?;
    let lxc: Option<LxcFile> = ctx.required(LXC_FILE, FileKind::Lxc, MINIMAL_LXC)?;
    let vms: Option<VmFile> = ctx.required(VM_FILE, FileKind::Vm, MINIMAL_VM)?;
    let stacks_config: Option<Option<StacksConfigFile>> =
        ctx.optional(STACKS_CONFIG_FILE, FileKind::StacksConfig)?;
    let certificates: Option<Option<Vec<CertificateEntry>>> =
        ctx.optional(CERTIFICATES_FILE, FileKind::Certificates)?;
    let stacks = ctx.stacks()?;

    let site = match (hypervisor, lxc, vms, stacks_config, certificates) {
        (Some(hypervisor), Some(lxc), Some(vms), Some(stacks_config), Some(certificates)) => Site {
            root: root.to_path_buf(),
            hypervisor,
            lxc,
            vms,
            stacks_config,
            certificates: certificates.unwrap_or_default(),
            stacks,
            sources,
        },
        _ => return Err(invalid(diagnostics)),
    };
    // Lints over a partly read site (a stack whose phoenix.json failed) would report
    // follow-on noise such as "stack not found"; the parse errors come first.
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(invalid(diagnostics));
    }

    diagnostics.extend(lint::run(&site));
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(invalid(diagnostics));
    }
    sort(&mut diagnostics);
    Ok(Loaded { site, diagnostics })
}

fn invalid(mut diagnostics: Vec<Diagnostic>) -> ManifestError {
    sort(&mut diagnostics);
    ManifestError::Invalid { diagnostics }
}

/// Files in the order a reader meets them (the hypervisor config first, stacks last), then
/// by line. The sort is stable, so findings on one line keep the order they were found in.
fn sort(diagnostics: &mut [Diagnostic]) {
    let rank = |file: &Path| {
        [
            HYPERVISOR_FILE,
            LXC_FILE,
            VM_FILE,
            STACKS_CONFIG_FILE,
            CERTIFICATES_FILE,
        ]
        .iter()
        .position(|known| file == Path::new(known))
        .unwrap_or(usize::MAX)
    };
    diagnostics.sort_by(|a, b| {
        (rank(&a.file), &a.file, a.line, a.column).cmp(&(rank(&b.file), &b.file, b.line, b.column))
    });
}

/// Reads files relative to the site root, keeping their text and collecting diagnostics.
struct Reader<'a> {
    root: &'a Path,
    sources: &'a mut Sources,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    /// `Ok(None)` if the file does not exist or is not UTF-8 (then an error is recorded).
    fn read(&mut self, relative: &Path) -> Result<Option<String>, ManifestError> {
        let path = self.root.join(relative);
        tracing::debug!(path = %path.display(), "reading manifest");
        // A hostile or broken file (a compose file with a 100 MB line) is refused
        // by its size, before it is read.
        let limit = if relative.ends_with(STACK_COMPOSE) {
            MAX_COMPOSE_BYTES
        } else {
            MAX_MANIFEST_BYTES
        };
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.len() > limit
        {
            self.diagnostics.push(
                Diagnostic::error(
                    relative,
                    format!(
                        "the file is {} bytes; phoenix reads files of this kind up to {limit} bytes",
                        meta.len()
                    ),
                )
                .with_help("is this the right file? Manifests are small; split it or trim it"),
            );
            return Ok(None);
        }
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(Some(text)),
                Err(err) => {
                    self.diagnostics.push(Diagnostic::error(
                        relative,
                        format!(
                            "not UTF-8 text (invalid byte at offset {})",
                            err.utf8_error().valid_up_to()
                        ),
                    ));
                    Ok(None)
                }
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ManifestError::Io { path, source }),
        }
    }

    fn parse<T: DeserializeOwned>(
        &mut self,
        relative: &Path,
        text: String,
        kind: FileKind,
    ) -> Option<T> {
        let value = parse::parse(relative, &text, kind, self.diagnostics);
        self.sources.insert(relative, text);
        value
    }

    /// `Ok(None)` when missing or invalid (an error was recorded).
    fn required<T: DeserializeOwned>(
        &mut self,
        file: &str,
        kind: FileKind,
        minimal: &str,
    ) -> Result<Option<T>, ManifestError> {
        let relative = Path::new(file);
        let errors_before = self.error_count();
        let Some(text) = self.read(relative)? else {
            if self.error_count() == errors_before {
                self.diagnostics.push(
                    Diagnostic::error(relative, format!("required file {file} is missing"))
                        .with_help(minimal.to_owned()),
                );
            }
            return Ok(None);
        };
        Ok(self.parse(relative, text, kind))
    }

    /// `Ok(Some(None))` when the file does not exist, `Ok(None)` when it is invalid.
    fn optional<T: DeserializeOwned>(
        &mut self,
        file: &str,
        kind: FileKind,
    ) -> Result<Option<Option<T>>, ManifestError> {
        let relative = Path::new(file);
        let errors_before = self.error_count();
        match self.read(relative)? {
            None if self.error_count() == errors_before => Ok(Some(None)),
            None => Ok(None),
            Some(text) => Ok(self.parse(relative, text, kind).map(Some)),
        }
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// A stack's `configs/*.env` files, by name.
    fn env_files(
        &mut self,
        relative_dir: &Path,
    ) -> Result<BTreeMap<String, EnvFile>, ManifestError> {
        let mut out = BTreeMap::new();
        let dir = self.root.join(relative_dir);
        if !dir.is_dir() {
            return Ok(out);
        }
        let io_error = |source| ManifestError::Io {
            path: dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error)? {
            let file_name = entry.map_err(io_error)?.file_name();
            if let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".env")) {
                names.push(stem.to_string());
            }
        }
        names.sort();
        for stem in names {
            let relative = relative_dir.join(format!("{stem}.env"));
            let Some(text) = self.read(&relative)? else {
                continue;
            };
            match EnvFile::parse(&text) {
                Ok(f) => {
                    out.insert(stem, f);
                }
                Err((line, message)) => self.diagnostics.push(
                    Diagnostic::error(&relative, format!("line {line} {message}")).with_help(
                        "an env file holds `NAME=value` lines, `#` comments and blank lines",
                    ),
                ),
            }
        }
        Ok(out)
    }

    /// Every `stacks/<name>/` with both files. Half-present stacks are warned about, other
    /// directories are left alone.
    fn stacks(&mut self) -> Result<BTreeMap<String, Stack>, ManifestError> {
        let mut stacks = BTreeMap::new();
        let dir = self.root.join(STACKS_DIR);
        if !dir.is_dir() {
            return Ok(stacks);
        }
        let io_error = |source| ManifestError::Io {
            path: dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            if entry.path().is_dir() {
                entries.push(entry.file_name());
            }
        }
        entries.sort();
        for name in entries {
            let relative_dir = Path::new(STACKS_DIR).join(&name);
            let Some(name) = name.to_str().map(str::to_owned) else {
                self.diagnostics.push(Diagnostic::warning(
                    &relative_dir,
                    "stack directory name is not UTF-8; skipped",
                ));
                continue;
            };
            let manifest_path = relative_dir.join(STACK_MANIFEST);
            let compose_path = relative_dir.join(STACK_COMPOSE);
            let has_manifest = self.root.join(&manifest_path).is_file();
            let has_compose = self.root.join(&compose_path).is_file();
            match (has_manifest, has_compose) {
                (false, false) => continue,
                (true, false) | (false, true) => {
                    let (present, missing) = if has_manifest {
                        (&manifest_path, STACK_COMPOSE)
                    } else {
                        (&compose_path, STACK_MANIFEST)
                    };
                    self.diagnostics.push(
                        Diagnostic::warning(
                            present,
                            format!("stack `{name}` has no {missing}, so it is not a stack"),
                        )
                        .with_help(format!(
                            "a stack needs both {STACKS_DIR}/{name}/{STACK_COMPOSE} and \
                             {STACKS_DIR}/{name}/{STACK_MANIFEST}"
                        )),
                    );
                    continue;
                }
                (true, true) => {}
            }
            let Some(manifest_text) = self.read(&manifest_path)? else {
                continue;
            };
            let Some(compose) = self.read(&compose_path)? else {
                continue;
            };
            let manifest: Option<StackManifest> =
                self.parse(&manifest_path, manifest_text, FileKind::StackManifest);
            let env_files = self.env_files(&relative_dir.join(STACK_CONFIGS_DIR))?;
            if let Some(manifest) = manifest {
                stacks.insert(
                    name.clone(),
                    Stack {
                        name,
                        dir: self.root.join(&relative_dir),
                        manifest,
                        compose,
                        env_files,
                    },
                );
            }
        }
        Ok(stacks)
    }
}

#[cfg(test)]
mod tests;
