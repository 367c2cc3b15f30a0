//! Errors in rule files, shown the way compilers show them: `rules/NAME.rhai:LINE:COL: message`, then
//! the source line and a caret under the column.

use std::fmt;
use std::path::{Path, PathBuf};

use rhai::{EvalAltResult, Position};

/// A problem at a position in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a Rhai position (which may be "none").
    pub fn at(path: &Path, position: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.to_path_buf(),
            line: position.line(),
            column: position.position(),
            message: message.into(),
        }
    }

    /// From a runtime error: the position is that of the innermost failing expression, even when it
    /// failed inside a closure (Rhai reports those as a call error whose own position is that of the call).
    pub fn from_eval(path: &Path, error: EvalAltResult) -> Self {
        let (position, message) = innermost(error);
        Diagnostic::at(path, position, message)
    }

    /// The one-line form followed by the source line and a caret, when the file can be read.
    pub fn render(&self) -> String {
        format!("{self}{}", self.snippet())
    }

    /// The source line and a caret under the column, on lines of their own (empty when unknown).
    pub fn snippet(&self) -> String {
        let (Some(line), Some(column)) = (self.line, self.column) else {
            return String::new();
        };
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return String::new();
        };
        let Some(source) = text.lines().nth(line.saturating_sub(1)) else {
            return String::new();
        };
        let gutter = line.to_string().len();
        format!(
            "\n{:gutter$} |\n{line} | {source}\n{:gutter$} | {:>column$}",
            "", "", "^"
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}:{}", self.column.unwrap_or(1))?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Walks down nested function-call errors to the one that carries the real position, and returns that
/// position with the message stripped of Rhai's own "(line L, position C)" suffix.
fn innermost(error: EvalAltResult) -> (Position, String) {
    match error {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, outer) => {
            let (position, message) = innermost(*inner);
            (if position.is_none() { outer } else { position }, message)
        }
        EvalAltResult::ErrorInModule(_, inner, outer) => {
            let (position, message) = innermost(*inner);
            (if position.is_none() { outer } else { position }, message)
        }
        // Errors our bindings raise carry their own wording; Rhai's "Runtime error: " adds nothing.
        EvalAltResult::ErrorRuntime(message, position) => (position, message.to_string()),
        EvalAltResult::ErrorTerminated(reason, position) => (position, format!("stopped: {reason}")),
        EvalAltResult::ErrorTooManyOperations(position) => (
            position,
            "stopped: the run took more operations than rules.max_operations allows".into(),
        ),
        mut other => {
            let position = other.take_position();
            (position, other.to_string())
        }
    }
}
