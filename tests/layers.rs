//! The layer rule, checked: every top-level module of `src/` has a row in the layer table of
//! `docs/ARCHITECTURE.md`, imports only the modules its row allows, the allowed imports point
//! one way (no cycle), and only `io` names the runtime's crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `module -> modules it may import`, from the table under "## Layers" whose columns are
/// `module | layer | owns | may import`.
fn layer_table() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let section = doc.split("\n## Layers").nth(1).expect("a '## Layers' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "a layer row has four cells: {line}");
        let module = cells[0].trim_matches('`').trim_end_matches('/').to_owned();
        let allowed = cells[3]
            .split(',')
            .map(|m| m.trim().trim_matches('`').trim_end_matches('/').to_owned())
            .filter(|m| !m.is_empty() && m != "nothing")
            .collect();
        table.insert(module, allowed);
    }
    assert!(!table.is_empty(), "the layer table has rows");
    table
}

/// The top-level modules of `src/` and their source files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let src = root().join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            out.insert(name, rust_files(&path));
        } else if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "lib" && *m != "main") {
            out.insert(module.to_owned(), vec![path]);
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A file's code without its unit tests (which may reach anywhere).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The top-level modules a file names through `crate::`.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `foo_crate::`, not ours
        }
        let name: String = code[at + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if modules.contains(&name) {
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_module_imports_only_what_its_layer_allows() {
    let table = layer_table();
    let modules = modules();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut violations = Vec::new();
    for (module, files) in &modules {
        let Some(allowed) = table.get(module) else {
            violations.push(format!("{module}: no row in the layer table of docs/ARCHITECTURE.md"));
            continue;
        };
        for file in files {
            for imported in imports(&code_of(file), &names) {
                if imported != *module && !allowed.contains(&imported) {
                    let file = file.strip_prefix(root()).unwrap_or(file).display();
                    violations.push(format!("{file}: {module} imports {imported}, which its layer may not"));
                }
            }
        }
    }
    for (module, allowed) in &table {
        if !names.contains(module) {
            violations.push(format!("the layer table names {module}, which src/ does not have"));
        }
        for other in allowed {
            if !table.contains_key(other) {
                violations.push(format!("{module} may import {other}, which has no row"));
            }
        }
    }
    assert!(violations.is_empty(), "layer violations:\n{}", violations.join("\n"));
}

#[test]
fn the_allowed_imports_point_one_way() {
    let table = layer_table();
    // Depth-first search for a cycle in "may import".
    fn visit<'a>(
        module: &'a str,
        table: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            return Some(format!("{} -> {module}", path[at..].join(" -> ")));
        }
        if done.contains(module) {
            return None;
        }
        path.push(module);
        for next in table.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, table, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module);
        None
    }
    let mut done = BTreeSet::new();
    for module in table.keys() {
        if let Some(cycle) = visit(module, &table, &mut Vec::new(), &mut done) {
            panic!("the layer table allows a cycle: {cycle}");
        }
    }
}

#[test]
fn only_io_names_the_runtime() {
    let mut violations = Vec::new();
    for (module, files) in modules() {
        if module == "io" {
            continue;
        }
        for file in files {
            let code = code_of(&file);
            for runtime in ["compio", "io_uring::", "compio_driver"] {
                if code.match_indices(runtime).any(|(at, _)| {
                    let before = code[..at].chars().next_back();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                }) {
                    violations.push(format!("{}: names {runtime}", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "only src/io may name the runtime:\n{}", violations.join("\n"));
}
