//! `import "name" as x;`: the helpers rules share (a notification's wording, a unit conversion) live in
//! `rules/lib/NAME.rhai`, and an import can load nothing else: no other directory, no `..`, no absolute
//! path, so a rule still reads no file the owner did not put there for rules.
//!
//! A module is evaluated afresh for every rule that imports it, while that rule loads (a few
//! microseconds for a file of helpers): there is no cache to go stale when a module is edited, and each
//! rule keeps the version it was loaded with until it is reloaded. What each load imported, directly or
//! through another module, is recorded, so an edited module reloads exactly the rules that use it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rhai::{Engine, EvalAltResult, Module, Position, Scope, Shared};

/// The directory of modules, next to the rule files.
pub const LIB_DIR: &str = "lib";

/// The resolver the engine asks for each `import`, and the record of what the rule loading imported.
/// Cloned handles share one state: the engine owns one, the rule set another.
#[derive(Clone, Default)]
pub struct Library {
    state: Arc<Mutex<Loading>>,
}

#[derive(Default)]
struct Loading {
    /// The `lib` directory of the rule loading; `None` between loads, when no import may run.
    dir: Option<PathBuf>,
    /// Modules being evaluated, innermost last: an import cycle shows up here.
    stack: Vec<PathBuf>,
    /// Every module file this load tried to import, found or not.
    imported: Vec<PathBuf>,
    /// Modules already evaluated in this load, for a module imported twice (by the rule and by
    /// another module).
    done: HashMap<PathBuf, Shared<Module>>,
}

impl Library {
    /// The rule at `rule` is about to load: its imports come from the `lib` directory beside it.
    pub fn begin(&self, rule: &Path) {
        let mut state = self.state();
        *state = Loading::default();
        state.dir = Some(rule.parent().unwrap_or_else(|| Path::new("")).join(LIB_DIR));
    }

    /// The load finished: the module files it imported (or tried to), each once.
    pub fn end(&self) -> Vec<PathBuf> {
        let mut state = self.state();
        let imported = std::mem::take(&mut state.imported);
        *state = Loading::default();
        imported
    }

    fn state(&self) -> MutexGuard<'_, Loading> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `name` may follow `import`: a file name in rules/lib/ without `.rhai`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Why `name` cannot be imported, in words that show the right form.
fn bad_name(name: &str) -> String {
    let hint = "a module is named by its file in rules/lib/ without `.rhai` \
                (letters, digits, `_`, `-`): `import \"notify\" as n;` loads rules/lib/notify.rhai";
    if let Some(stem) = name.strip_suffix(".rhai").filter(|s| valid_name(s)) {
        format!("import \"{name}\": leave out `.rhai` (import \"{stem}\" loads rules/lib/{stem}.rhai)")
    } else if name.contains('/') || name.contains('\\') || name.contains("..") {
        format!(
            "import \"{name}\": modules are loaded from rules/lib/ only, not from other directories; {hint}"
        )
    } else {
        format!("import \"{name}\": {hint}")
    }
}

fn error(message: String, position: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), position))
}

impl rhai::ModuleResolver for Library {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        name: &str,
        position: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        if !valid_name(name) {
            return Err(error(bad_name(name), position));
        }
        let path = {
            let mut state = self.state();
            let Some(dir) = &state.dir else {
                return Err(error(
                    format!(
                        "import \"{name}\" belongs at the top of a rule file: modules are loaded \
                         with the rule, not while it runs"
                    ),
                    position,
                ));
            };
            let path = dir.join(format!("{name}.rhai"));
            if let Some(start) = state.stack.iter().position(|p| *p == path) {
                let cycle: Vec<String> = state.stack[start..]
                    .iter()
                    .chain([&path])
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(error(
                    format!("import cycle: {}", cycle.join(" imports ")),
                    position,
                ));
            }
            if !state.imported.contains(&path) {
                state.imported.push(path.clone());
            }
            if let Some(module) = state.done.get(&path) {
                return Ok(module.clone());
            }
            state.stack.push(path.clone());
            path
        };
        let result = evaluate(engine, &path, name, position);
        let mut state = self.state();
        state.stack.pop();
        let module = result?;
        state.done.insert(path, module.clone());
        Ok(module)
    }
}

/// Compiles and runs the module at `path` (imported as `name` at `position`), making its public
/// functions and exported constants a module. Its errors are reported in its own file, with the import
/// that led there.
fn evaluate(
    engine: &Engine,
    path: &Path,
    name: &str,
    position: Position,
) -> Result<Shared<Module>, Box<EvalAltResult>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".to_string()
        } else {
            e.to_string()
        };
        error(format!("import \"{name}\": cannot read {file}: {why}"), position)
    })?;
    let in_module = |inner: EvalAltResult| {
        Box::new(EvalAltResult::ErrorInModule(
            file.clone(),
            Box::new(inner),
            position,
        ))
    };
    let mut ast = engine
        .compile(&text)
        .map_err(|e| in_module(EvalAltResult::ErrorParsing(*e.0, e.1)))?;
    ast.set_source(file.as_str());
    Module::eval_ast_as_new(Scope::new(), &ast, engine)
        .map(Shared::new)
        .map_err(|e| in_module(*e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_modules() {
        for name in ["notify", "units_2", "my-helpers"] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", "../x", "/etc/passwd", "sub/x", "x.rhai", "a b", ".."] {
            assert!(!valid_name(name), "{name}");
        }
        assert!(bad_name("x.rhai").contains("leave out `.rhai`"));
        assert!(bad_name("../secrets").contains("rules/lib/ only"));
        assert!(bad_name("/etc/x").contains("rules/lib/ only"));
    }
}
