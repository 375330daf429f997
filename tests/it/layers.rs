//! The layers of the code map, checked (rust-analyzer's tidy tests do the same for its
//! architecture invariants): the `# Layers` list in the `//!` doc of `src/lib.rs` is read, every
//! `crate::…` path in `src/**/*.rs` (in `use` lines and in code, `self::` and `super::`
//! resolved) is mapped to the module it names, and a path from a module to one in a higher layer
//! fails the test, naming the file, the path and both layers. Top-level modules must not import
//! each other in a loop, every module must be in a layer, and the pure modules must not touch an
//! I/O crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that must stay free of I/O: the domain core and the record rewriting.
const PURE: &[&str] = &["domain", "dns::rewrite"];
/// Crates the pure modules must not name.
const IO_CRATES: &[&str] =
    &["tokio", "sqlx", "reqwest", "russh", "hickory_proto", "hickory_resolver", "axum", "lettre"];

/// One module's source: its path (`engine::steps::lower`) and text.
struct Source {
    file: PathBuf,
    module: String,
    text: String,
}

/// An import that breaks a rule.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation(String);

#[test]
fn no_module_imports_one_from_a_higher_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let layers = layers_from_code_map(&lib);
    assert!(layers.len() >= 8, "the code map's # Layers list is missing or short: {layers:?}");
    let sources = read_tree(&root.join("src"));
    let violations = check(&layers, &sources);
    assert!(violations.is_empty(), "layering violations:\n{}", list(&violations));
}

#[test]
fn the_checker_finds_an_upward_import_a_cycle_an_unlisted_module_and_io_in_the_core() {
    // A tree of its own, so the check above cannot pass by finding nothing.
    let layers = layers_from_code_map(
        "//! # Layers, from the ground up\n//!\n//! 1. `names`\n//! 2. `domain`\n//! 3. `store`\n//! 4. `engine::steps`\n//! 5. `engine`\n//!\n//! # Next\n",
    );
    assert_eq!(
        layers,
        vec![vec!["names"], vec!["domain"], vec!["store"], vec!["engine::steps"], vec!["engine"]]
    );
    let source = |module: &str, text: &str| Source {
        file: PathBuf::from(format!("src/{}.rs", module.replace("::", "/"))),
        module: module.to_owned(),
        text: text.to_owned(),
    };
    let sources = vec![
        source("names", "pub struct Name;"),
        // Upward, in a grouped use tree, with a string and a comment that must not count.
        source(
            "store",
            "use crate::{names::Name, engine::{Engine, steps::lower}};\nconst URL: &str = \"https://x//crate::engine\"; // crate::engine::Other",
        ),
        // Upward through `super::super` from a nested module.
        source("engine::steps", "use super::super::engine::Engine; fn f() { let _ = crate::domain::X; }"),
        source("engine", "use self::steps::lower; pub struct Engine;"),
        // A cycle between two top-level modules of one layer would need two modules in one
        // layer; domain imports store (upward, and a loop with store → domain below).
        source("domain", "use tokio::sync::Mutex; fn f() { crate::store::Store::x(); }"),
        source("stray", "use crate::names::Name;"),
    ];
    let mut sources = sources;
    sources[1].text.push_str("\nuse crate::domain::X;");
    let violations = check(&layers, &sources);
    let text = list(&violations);
    for expected in [
        "src/store.rs: crate::engine::Engine (layer 5: engine) from layer 3 (store)",
        "src/store.rs: crate::engine::steps::lower (layer 4: engine::steps) from layer 3 (store)",
        "src/domain.rs: crate::store::Store::x (layer 3: store) from layer 2 (domain)",
        "import cycle between top-level modules: domain → store → domain",
        "src/stray.rs: module stray is in no layer of the code map",
        "src/domain.rs: the pure module domain names the I/O crate tokio",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("URL") && !text.contains("Other"), "a string or comment counted:\n{text}");
    assert!(!text.contains("src/engine.rs"), "engine → engine::steps is downward:\n{text}");
}

/// The `# Layers, from the ground up` list of the code map: one numbered line per layer, its
/// modules in backquotes.
fn layers_from_code_map(lib: &str) -> Vec<Vec<String>> {
    let doc: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("//!")).map(str::trim).collect();
    let start = doc.iter().position(|l| l.starts_with("# Layers")).unwrap_or(doc.len());
    let mut layers = Vec::new();
    for line in doc.iter().skip(start + 1) {
        if line.starts_with('#') {
            break;
        }
        let Some((number, rest)) = line.split_once(". ") else { continue };
        if number.parse::<usize>().is_err() {
            continue;
        }
        let modules: Vec<String> = rest.split('`').skip(1).step_by(2).map(str::to_owned).collect();
        layers.push(modules);
    }
    layers
}

/// Every `.rs` file under `src`, with its module path; `lib.rs` and `main.rs` are the root.
fn read_tree(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut sources = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = PathBuf::from("src").join(file.strip_prefix(src).unwrap());
        sources.push(Source { file: shown, module: parts.join("::"), text });
    }
    sources
}

/// Checks the sources against the layers.
fn check(layers: &[Vec<String>], sources: &[Source]) -> Vec<Violation> {
    let layer_of = |module: &str| -> Option<(usize, &str)> {
        let mut best: Option<(usize, &str)> = None;
        for (n, layer) in layers.iter().enumerate() {
            for name in layer {
                let matches = module == name || module.starts_with(&format!("{name}::"));
                if matches && best.is_none_or(|(_, b)| name.len() > b.len()) {
                    best = Some((n + 1, name.as_str()));
                }
            }
        }
        best
    };
    let modules: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let code = code_only(&source.text);
        let file = source.file.display();
        let Some((from_layer, from_name)) = layer_of(&source.module) else {
            violations
                .push(Violation(format!("{file}: module {} is in no layer of the code map", source.module)));
            continue;
        };
        if PURE.contains(&source.module.as_str()) {
            for krate in IO_CRATES {
                if names_crate(&code, krate) {
                    violations.push(Violation(format!(
                        "{file}: the pure module {} names the I/O crate {krate}",
                        source.module
                    )));
                }
            }
        }
        for path in crate_paths(&code, &source.module) {
            // The module a path names: its longest prefix that is a module of the tree.
            let segments: Vec<&str> = path.split("::").collect();
            let target = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| modules.contains(m.as_str()))
                .unwrap_or_else(|| segments[0].to_owned());
            if target == source.module || source.module.starts_with(&format!("{target}::")) {
                continue;
            }
            let (from_top, to_top) = (top(&source.module), top(&target));
            if from_top != to_top {
                edges.entry(from_top.to_owned()).or_default().insert(to_top.to_owned());
            }
            let Some((to_layer, to_name)) = layer_of(&target) else { continue };
            if to_layer > from_layer {
                violations.push(Violation(format!(
                    "{file}: crate::{path} (layer {to_layer}: {to_name}) from layer {from_layer} ({from_name})"
                )));
            }
        }
    }
    violations.extend(cycles(&edges));
    violations.sort();
    violations.dedup();
    violations
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Each loop in the graph of top-level modules, once, starting at its smallest module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Violation> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    if path.iter().all(|m| m >= start) {
                        found.insert(cycle.join(" → "));
                    }
                } else if !path.contains(next) && next > start {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().map(|c| Violation(format!("import cycle between top-level modules: {c}"))).collect()
}

/// The source with comments, string and character literals blanked out.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal (a lifetime has no closing quote two characters on).
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Whether `code` names a path rooted at the crate `krate` (`tokio::…`).
fn names_crate(code: &str, krate: &str) -> bool {
    let needle = format!("{krate}::");
    code.match_indices(needle.as_str()).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

/// Every path to an item of this crate in `code`, as `a::b::c` without `crate::`: `crate::…`,
/// `self::…` and `super::…` paths, use trees with braces expanded. `module` is the file's own
/// module (a `mod.rs` is its directory's module, so `super` is one level up in both cases).
fn crate_paths(code: &str, module: &str) -> Vec<String> {
    let own: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    let chars: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let after_path = i > 0 && chars[i - 1] == ':';
        if !prev_is_ident(&chars, i) && !after_path {
            for (root, base) in [("crate::", Vec::new()), ("self::", own.clone()), ("super::", own.clone())] {
                if starts_with(&chars, i, root) {
                    let mut base: Vec<String> = base.iter().map(|s| s.to_string()).collect();
                    let mut j = i + root.len();
                    if root == "super::" {
                        base.pop();
                        while starts_with(&chars, j, "super::") {
                            base.pop();
                            j += "super::".len();
                        }
                    }
                    let (tree, end) = use_tree(&chars, j);
                    for path in tree {
                        let mut full = base.clone();
                        full.extend(path.split("::").filter(|s| !s.is_empty()).map(str::to_owned));
                        if !full.is_empty() {
                            paths.push(full.join("::"));
                        }
                    }
                    i = end;
                    break;
                }
            }
        }
        i += 1;
    }
    paths
}

fn starts_with(chars: &[char], at: usize, text: &str) -> bool {
    text.chars().enumerate().all(|(k, c)| chars.get(at + k) == Some(&c))
}

/// Parses a path or use tree starting at `at` (`a::b`, `a::{b, c::{d}}`, `a::*`); returns the
/// expanded paths and where parsing stopped.
fn use_tree(chars: &[char], mut at: usize) -> (Vec<String>, usize) {
    let skip_ws = |at: &mut usize| {
        while chars.get(*at).is_some_and(|c| c.is_whitespace()) {
            *at += 1;
        }
    };
    let mut prefix = String::new();
    loop {
        skip_ws(&mut at);
        if chars.get(at) == Some(&'{') {
            at += 1;
            let mut paths = Vec::new();
            loop {
                skip_ws(&mut at);
                match chars.get(at) {
                    Some('}') => {
                        at += 1;
                        break;
                    }
                    Some(',') => at += 1,
                    None => break,
                    _ => {
                        let (inner, end) = use_tree(chars, at);
                        paths.extend(inner.into_iter().map(|p| {
                            if p.is_empty() || p == "self" { prefix.clone() } else { format!("{prefix}{p}") }
                        }));
                        if end == at {
                            at += 1;
                        } else {
                            at = end;
                        }
                    }
                }
            }
            return (paths, at);
        }
        let start = at;
        while chars.get(at).is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '*') {
            at += 1;
        }
        let segment: String = chars[start..at].iter().collect();
        if segment == "*" || segment.is_empty() {
            return (vec![prefix.trim_end_matches("::").to_owned()], at);
        }
        prefix.push_str(&segment);
        if starts_with(chars, at, "::") {
            prefix.push_str("::");
            at += 2;
        } else {
            return (vec![prefix], at);
        }
    }
}

fn list(violations: &[Violation]) -> String {
    violations.iter().map(|v| format!("- {}\n", v.0)).collect()
}
