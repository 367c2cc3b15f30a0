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
    /// An error inside a module of rules/lib/ is reported in the module's file, followed by the place
    /// in `path` (or another module) that imported or called it.
    pub fn from_eval(path: &Path, error: EvalAltResult) -> Self {
        let found = innermost(error);
        let file = found.file.map_or_else(|| path.to_path_buf(), PathBuf::from);
        let mut message = found.message;
        let via: Vec<String> = found
            .trail
            .into_iter()
            .filter_map(|step| {
                let at = step.file.map_or_else(|| path.to_path_buf(), PathBuf::from);
                let line = step.position.line()?;
                (at != file).then(|| {
                    let column = step.position.position().unwrap_or(1);
                    format!("{} {}:{line}:{column}", step.how, at.display())
                })
            })
            .collect();
        if !via.is_empty() {
            message = format!("{message} ({})", via.join(", "));
        }
        Diagnostic::at(&file, found.position, message)
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

/// Where an error happened: in which file (`None`: the file of the code around it), where, and the
/// calls and imports that led there from other places, innermost first.
struct Found {
    file: Option<String>,
    position: Position,
    message: String,
    trail: Vec<Step>,
}

/// A call or an import on the way to an error.
struct Step {
    how: &'static str,
    file: Option<String>,
    position: Position,
}

/// Walks down nested function-call and module errors to the one that carries the real position, and
/// returns that position with the message stripped of Rhai's own "(line L, position C)" suffix.
fn innermost(error: EvalAltResult) -> Found {
    match error {
        EvalAltResult::ErrorInFunctionCall(_, source, inner, outer) => frame(
            *inner,
            Some(source).filter(|s| !s.is_empty()),
            outer,
            "called from",
        ),
        EvalAltResult::ErrorInModule(module, inner, outer) => frame(
            *inner,
            Some(module).filter(|s| !s.is_empty()),
            outer,
            "imported by",
        ),
        // Errors our bindings raise carry their own wording; Rhai's "Runtime error: " adds nothing.
        EvalAltResult::ErrorRuntime(message, position) => leaf(position, message.to_string()),
        // As a rule's own syntax errors read (a module's come through evaluation).
        EvalAltResult::ErrorParsing(kind, position) => leaf(position, kind.to_string()),
        EvalAltResult::ErrorTerminated(reason, position) => leaf(position, format!("stopped: {reason}")),
        EvalAltResult::ErrorTooManyOperations(position) => leaf(
            position,
            "stopped: the run took more operations than rules.max_operations allows".into(),
        ),
        mut other => {
            let position = other.take_position();
            leaf(position, other.to_string())
        }
    }
}

fn leaf(position: Position, message: String) -> Found {
    Found {
        file: None,
        position,
        message,
        trail: Vec::new(),
    }
}

/// A call into a function (or the evaluation of a module) from `outer`, whose code lives in `file`
/// (`None`: the same file as the caller's).
fn frame(inner: EvalAltResult, file: Option<String>, outer: Position, how: &'static str) -> Found {
    let mut found = innermost(inner);
    if found.position.is_none() {
        // Nothing more precise inside: the error is the call itself, in the caller's file.
        found.position = outer;
        return found;
    }
    if let Some(file) = file {
        // Inside this frame, what has no file yet is in this frame's file.
        found.file.get_or_insert_with(|| file.clone());
        for step in &mut found.trail {
            step.file.get_or_insert_with(|| file.clone());
        }
    }
    found.trail.push(Step {
        how,
        file: None,
        position: outer,
    });
    found
}
