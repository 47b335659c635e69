//! The layering rule of `docs/ARCHITECTURE.md`, enforced: every `crate::` path in `src/` must
//! point at a module listed below its own in the `layers` block of that document.
//!
//! The block is the one place the allowed directions are written down; this test reads it, so
//! changing the design means changing the document, and an import that points back up fails here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Module name → layer index (0 is the top). Names on one line share a layer and may not use
/// each other.
fn read_layers(doc: &str) -> BTreeMap<String, usize> {
    let start = doc
        .find("```layers\n")
        .expect("docs/ARCHITECTURE.md has a ```layers block");
    let body = &doc[start + "```layers\n".len()..];
    let end = body.find("```").expect("the layers block is closed");
    let mut layers = BTreeMap::new();
    for (index, line) in body[..end]
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        for name in line.split_whitespace() {
            assert!(
                layers.insert(name.to_string(), index).is_none(),
                "{name} is listed twice in the layers block"
            );
        }
    }
    layers
}

/// The top-level module a source file belongs to: `src/routing/traffic.rs` → `routing`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("file is under src/");
    let first = relative
        .components()
        .next()
        .expect("a path under src/ has a component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// Code without `//` comments, so prose that names a path is not an import.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every top-level module named after `crate::`, including those inside `crate::{a::X, b}`.
fn referenced_modules(text: &str) -> Vec<String> {
    let code = strip_comments(text);
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at].chars().next_back().is_some_and(is_ident);
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0 that start an item.
            let mut depth = 0usize;
            let mut expect_name = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if depth == 0 && expect_name && is_ident(c) => name.push(c),
                    _ => {}
                }
                let still_in_name = depth == 0 && is_ident(c);
                if !still_in_name && !name.is_empty() {
                    found.push(std::mem::take(&mut name));
                    expect_name = false;
                }
            }
            if !name.is_empty() {
                found.push(name); // the group ended right after a bare name: `{a, tensor}`
            }
        } else {
            let name: String = after.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// `file` (of module `module`) uses modules at or above its own layer: one message per use.
fn violations(
    layers: &BTreeMap<String, usize>,
    module: &str,
    file: &str,
    text: &str,
) -> Vec<String> {
    let Some(&own) = layers.get(module) else {
        return vec![format!(
            "{file}: module `{module}` is not in the layers block of docs/ARCHITECTURE.md"
        )];
    };
    let mut out = Vec::new();
    for used in referenced_modules(text) {
        if used == module || used == "self" || used == "super" {
            continue;
        }
        match layers.get(&used) {
            Some(&layer) if layer > own => {}
            Some(_) => out.push(format!(
                "{file}: `{module}` uses `crate::{used}`, which is not below it in docs/ARCHITECTURE.md"
            )),
            None => out.push(format!(
                "{file}: uses `crate::{used}`, a module missing from the layers block"
            )),
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn architecture_layers() -> BTreeMap<String, usize> {
    let doc = fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md exists");
    read_layers(&doc)
}

#[test]
fn every_import_in_src_points_down_the_layers() {
    let layers = architecture_layers();
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found the sources ({} files)",
        files.len()
    );
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" {
            continue; // the crate root declares every module
        }
        let text = fs::read_to_string(file).expect("source is readable");
        let shown = file
            .strip_prefix(ROOT)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(violations(&layers, &module, &shown, &text));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Past this a file has more than one job, unless its opening lines say why it does not.
const MAX_LINES: usize = 420;
const LONG_FILE_REASON: &str = "//! Long because";

#[test]
fn every_source_file_has_one_job_or_says_why_it_is_long() {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = fs::read_to_string(file).expect("source is readable");
            let lines = text.lines().count();
            let explained = text
                .lines()
                .take(5)
                .any(|l| l.starts_with(LONG_FILE_REASON));
            (lines > MAX_LINES && !explained).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a `{LONG_FILE_REASON} ...` line at the top: {long:?}"
    );
}

#[test]
fn every_module_of_the_crate_is_placed_in_a_layer() {
    let layers = architecture_layers();
    let lib = fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).expect("src/lib.rs");
    let main = fs::read_to_string(Path::new(ROOT).join("src/main.rs")).expect("src/main.rs");
    let declared: Vec<String> = lib
        .lines()
        .chain(main.lines())
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    assert!(declared.len() > 5, "read the module declarations");
    let missing: Vec<_> = declared
        .iter()
        .filter(|m| !layers.contains_key(*m))
        .collect();
    assert!(missing.is_empty(), "modules without a layer: {missing:?}");
}

#[test]
fn every_source_file_has_its_line_in_the_module_map() {
    let doc = fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md exists");
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let missing: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(ROOT).unwrap_or(f).display().to_string())
        .map(|f| f.trim_start_matches('/').to_string())
        .filter(|f| !doc.lines().any(|l| l.starts_with(&format!("{f} "))))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a line in the module map of docs/ARCHITECTURE.md: {missing:?}"
    );
}

#[test]
fn an_import_pointing_up_is_reported() {
    let layers = read_layers("```layers\napi\nrouting\nregistry\ntensor metrics\n```\n");
    let up = "use crate::routing::Router;\nuse crate::tensor::Tensor;\n";
    assert_eq!(
        violations(&layers, "registry", "src/registry/mod.rs", up),
        vec![
            "src/registry/mod.rs: `registry` uses `crate::routing`, which is not below it in \
             docs/ARCHITECTURE.md"
                .to_string()
        ]
    );
    // Grouped imports, inline paths and same-layer neighbours count too; comments do not.
    let grouped = "use crate::{api::error::ApiError, tensor};\n// crate::api in a comment\n";
    assert_eq!(violations(&layers, "routing", "f.rs", grouped).len(), 1);
    let inline = "fn f() { crate::api::serve(); }";
    assert_eq!(violations(&layers, "tensor", "f.rs", inline).len(), 1);
    assert_eq!(
        violations(&layers, "tensor", "f.rs", "use crate::metrics::X;").len(),
        1,
        "modules on one line may not use each other"
    );
    assert_eq!(violations(&layers, "api", "f.rs", up).len(), 0);
    assert_eq!(
        violations(&layers, "loadgen", "f.rs", "").len(),
        1,
        "a module missing from the block is reported"
    );
}

#[test]
fn nested_groups_yield_only_their_top_level_modules() {
    let text = "use crate::{\n    routing::{self, traffic::{A, B}},\n    registry,\n};";
    assert_eq!(referenced_modules(text), vec!["routing", "registry"]);
    assert_eq!(
        referenced_modules("use crate::{api::X, tensor};"),
        vec!["api", "tensor"]
    );
    assert!(referenced_modules("use ferroserve_crate::api;").is_empty());
}
