//! Asking an executable what it is (its engine, compiler and receivers) before a bundle
//! carries it: by running it with the hidden `build-info` command.

use std::path::{Path, PathBuf};

use super::BundleError;
use super::format::io;

/// The file name `ferry bundle` looks for beside itself when no `--runtime` is given.
pub const RUNTIME_NAME: &str = "ferry-runtime";

/// What an executable is: its engine, whether it compiles, and its receivers. `ferry bundle`
/// asks a runtime for it (hidden `ferry build-info`) before carrying it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildInfo {
    /// Its `ferry` version.
    pub ferry: String,
    /// The engine it compiles for and loads code from.
    pub engine: String,
    /// Whether it carries the compiler.
    pub compiler: bool,
    /// The receivers it can start.
    pub receivers: Vec<String>,
}

impl BuildInfo {
    /// This process's.
    pub fn current() -> BuildInfo {
        BuildInfo {
            ferry: env!("CARGO_PKG_VERSION").into(),
            engine: crate::plugin::engine::engine_key(),
            compiler: cfg!(feature = "compiler"),
            receivers: crate::receiver::built()
                .into_iter()
                .map(str::to_string)
                .collect(),
        }
    }

    /// Asks the executable `path` for its build info.
    pub fn of(path: &Path) -> Result<BuildInfo, BundleError> {
        let fail = |reason: String| BundleError::Runtime {
            path: path.to_path_buf(),
            reason,
        };
        let out = std::process::Command::new(path)
            .arg("build-info")
            .output()
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "`build-info` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(format!("not a ferry of this kind (build-info: {e})")))
    }

    /// Why this executable cannot carry code compiled for `engine` and start `receivers`.
    pub(super) fn unfit(&self, engine: &str, receivers: &[String]) -> Option<String> {
        if self.engine != engine {
            return Some(format!(
                "it runs engine {}, but this ferry compiles for {engine}: build both from the \
                 same source",
                self.engine
            ));
        }
        let missing: Vec<&str> = receivers
            .iter()
            .filter(|r| !self.receivers.contains(r))
            .map(String::as_str)
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "it was built without the {} receiver(s) (it has {}); build one with \
                 `cargo build --profile slim -p ferry --no-default-features --features {}`",
                missing.join(", "),
                self.receivers.join(", "),
                receivers
                    .iter()
                    .filter(|r| *r != "otlp")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
    }
}

/// The executable a bundle carries, and what it is.
#[derive(Debug)]
pub struct Runtime {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub info: BuildInfo,
    /// Why a runtime found beside this executable was passed over, if one was.
    pub passed_over: Option<String>,
}

/// Chooses the executable a bundle carries: `explicit` (which must fit), else
/// [`RUNTIME_NAME`] beside this executable when it fits, else this executable. To fit, it runs
/// the same engine and has every receiver in `receivers` (all of its own when `None`).
pub fn choose_runtime(
    explicit: Option<&Path>,
    receivers: Option<&[String]>,
) -> Result<Runtime, BundleError> {
    let engine = crate::plugin::engine::engine_key();
    let wanted = receivers.unwrap_or_default();
    let fit = |path: &Path| {
        let info = BuildInfo::of(path)?;
        match info.unfit(&engine, wanted) {
            None => Ok(info),
            Some(reason) => Err(BundleError::Runtime {
                path: path.to_path_buf(),
                reason,
            }),
        }
    };
    if let Some(path) = explicit {
        return Ok(Runtime {
            path: path.to_path_buf(),
            info: fit(path)?,
            passed_over: None,
        });
    }
    let me = std::env::current_exe().map_err(io(Path::new("current executable")))?;
    let mut passed_over = None;
    if let Some(beside) = me.parent().map(|d| d.join(RUNTIME_NAME))
        && beside.is_file()
    {
        match fit(&beside) {
            Ok(info) => {
                return Ok(Runtime {
                    path: beside,
                    info,
                    passed_over: None,
                });
            }
            Err(e) => passed_over = Some(e.to_string()),
        }
    }
    let info = BuildInfo::current();
    if let Some(reason) = info.unfit(&engine, wanted) {
        return Err(BundleError::Runtime { path: me, reason });
    }
    Ok(Runtime {
        path: me,
        info,
        passed_over,
    })
}
