//! The Shell: every status line the user sees goes through here, to stderr,
//! with the verb bold and right-aligned to 12 columns (cargo's style);
//! stdout is kept for data (plans, JSON).
//!
//! The verbs are a closed list that tests match on: `Refreshing`, `Planning`,
//! `Creating`, `Updating`, `Replacing`, `Deleting`, `Adopting`, `Forgetting`,
//! `Waiting`, `Starting`, `Stopping`, `Configuring`, `Committed`, `Blocking`,
//! `Finished`, `Failed`, `Skipped`.

use std::io::Write;
use std::sync::Mutex;

use console::Style;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub struct Shell {
    err: Mutex<Box<dyn Write + Send>>,
    color: bool,
    verbosity: Verbosity,
}

impl Shell {
    pub fn new(color: bool, verbosity: Verbosity) -> Self {
        Shell {
            err: Mutex::new(Box::new(std::io::stderr())),
            color,
            verbosity,
        }
    }

    /// A shell writing to `w` without colors, for tests.
    pub fn from_write(w: Box<dyn Write + Send>) -> Self {
        Shell {
            err: Mutex::new(w),
            color: false,
            verbosity: Verbosity::Normal,
        }
    }

    pub fn color(&self) -> bool {
        self.color
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    fn write_line(&self, line: &str) {
        let mut w = match self.err.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let _ = writeln!(w, "{line}");
        let _ = w.flush();
    }

    fn styled(&self, style: Style, text: &str) -> String {
        style.force_styling(self.color).apply_to(text).to_string()
    }

    /// `   Creating lxc.101` (green bold verb).
    pub fn status(&self, verb: &str, message: impl std::fmt::Display) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        self.write_line(&self.status_line(verb, message));
    }

    /// The text of a status line, for callers that print it themselves (the live view).
    pub fn status_line(&self, verb: &str, message: impl std::fmt::Display) -> String {
        let v = self.styled(Style::new().green().bold(), &format!("{verb:>12}"));
        format!("{v} {message}")
    }

    /// Whether stderr is a terminal that can show a live view (spinners);
    /// otherwise (CI logs, pipes) status lines are plain.
    pub fn is_tty(&self) -> bool {
        self.verbosity != Verbosity::Quiet
            && console::Term::stderr().is_term()
            && std::env::var("TERM").map_or(true, |t| t != "dumb")
    }

    /// A status line shown only with `--verbose`.
    pub fn verbose_status(&self, verb: &str, message: impl std::fmt::Display) {
        if self.verbosity == Verbosity::Verbose {
            self.status(verb, message);
        }
    }

    /// A status line in red (`Failed`).
    pub fn status_err(&self, verb: &str, message: impl std::fmt::Display) {
        let v = self.styled(Style::new().red().bold(), &format!("{verb:>12}"));
        self.write_line(&format!("{v} {message}"));
    }

    pub fn warn(&self, message: impl std::fmt::Display) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        let l = self.styled(Style::new().yellow().bold(), "warning");
        self.write_line(&format!("{l}: {message}"));
    }

    pub fn error(&self, message: impl std::fmt::Display) {
        let l = self.styled(Style::new().red().bold(), "error");
        self.write_line(&format!("{l}: {message}"));
    }

    pub fn note(&self, message: impl std::fmt::Display) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        let l = self.styled(Style::new().cyan().bold(), "note");
        self.write_line(&format!("{l}: {message}"));
    }

    /// A raw line to stderr (diagnostic blocks already formatted).
    pub fn raw(&self, text: impl std::fmt::Display) {
        self.write_line(&text.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn verbs_right_aligned() {
        let buf = Buf::default();
        let sh = Shell::from_write(Box::new(buf.clone()));
        sh.status("Creating", "lxc.101");
        sh.warn("careful");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "    Creating lxc.101\nwarning: careful\n");
    }
}
