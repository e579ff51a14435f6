//! The crate's modules form layers, drawn as a table in `src/lib.rs`'s
//! doc (the one list of them, read here): a module may use only modules of
//! a lower layer, so the arrows run one way — the server uses the routes,
//! the routes use the store and the proxy, and the proxy knows nothing of
//! PATs. This reads every source file under `src/` and fails on any
//! `crate::<name>` path (in `use` lines, in code, in doc links, in tests)
//! that points sideways or up, that names something the table does not
//! rank (what `lib.rs` itself defines included: nothing below it may use
//! it), and on a module the table leaves out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers of `lib.rs`'s table: each module's rank, higher layers
/// using lower ones (the table's last line is rank 1).
fn layers(lib: &str) -> Vec<(String, u8)> {
    let mut lines = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| *l != "```text")
        .skip(1)
        .take_while(|l| *l != "```");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for line in lines.by_ref() {
        // A layer's line starts at the margin; a description goes on
        // indented below it.
        if line.is_empty() || line.starts_with(' ') {
            continue;
        }
        let names = line.split("  ").next().unwrap_or("");
        rows.push(names.split(',').map(|n| n.trim().to_string()).collect());
    }
    let top = rows.len();
    rows.into_iter()
        .enumerate()
        .flat_map(|(i, names)| {
            let rank = u8::try_from(top - i).expect("fewer than 256 layers");
            names.into_iter().map(move |n| (n, rank))
        })
        .collect()
}

fn layer(layers: &[(String, u8)], module: &str) -> Option<u8> {
    layers.iter().find(|(name, _)| name == module).map(|&(_, rank)| rank)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(module, "lib" | "main")).then(|| module.to_string())
}

/// Every module named right after `crate::` in `text`, including each one
/// of a `crate::{a, b::c}` group.
fn uses(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        // `$crate::` in a macro is the same crate; `embedgate::crate::` is not a thing.
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            found.extend(inner.split(',').map(|item| ident(item.trim())));
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn no_module_uses_a_module_of_its_own_layer_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layers(&read(&src.join("lib.rs")));
    assert!(layers.len() > 20, "lib.rs's table gave only {layers:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 30,
        "found only {} files under {}",
        files.len(),
        src.display()
    );

    let mut wrong = BTreeMap::new();
    for file in &files {
        let Some(module) = owner(&src, file) else { continue };
        let Some(rank) = layer(&layers, &module) else {
            panic!("module {module} is in no layer: add it to the table in src/lib.rs");
        };
        for used in uses(&read(file)) {
            if used == module {
                continue;
            }
            let problem = match layer(&layers, &used) {
                Some(used_rank) if used_rank < rank => continue,
                Some(used_rank) => format!("{module} (layer {rank}) uses {used} (layer {used_rank})"),
                None => format!("{module} (layer {rank}) uses crate::{used}, which no layer holds"),
            };
            wrong
                .entry(file.display().to_string())
                .or_insert_with(Vec::new)
                .push(problem);
        }
    }
    assert!(wrong.is_empty(), "imports that point sideways or up:\n{wrong:#?}");
}

#[test]
fn every_module_of_lib_rs_is_ranked_and_every_rank_is_a_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = read(&src.join("lib.rs"));
    let mut declared: Vec<String> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let mut ranked: Vec<String> = layers(&lib).into_iter().map(|(n, _)| n).collect();
    declared.sort();
    ranked.sort();
    assert_eq!(
        declared, ranked,
        "the modules lib.rs declares, and those its table ranks"
    );
}

#[test]
fn the_check_sees_grouped_and_inline_paths_and_reads_the_table() {
    let text = "use crate::{api, embed::Local};\nlet x = crate::state::State::build();\n/// [`crate::proxy`]";
    assert_eq!(uses(text), ["api", "embed", "state", "proxy"]);
    let table = "//! x\n//!\n//! ```text\n//! server, demo      a\n//!                     more\n//! router            b\n//! body, query       c\n//! ```\n";
    let layers = layers(table);
    assert_eq!(layer(&layers, "server"), Some(3));
    assert_eq!(layer(&layers, "demo"), Some(3));
    assert_eq!(layer(&layers, "router"), Some(2));
    assert_eq!(layer(&layers, "query"), Some(1));
    assert_eq!(layer(&layers, "more"), None);
    assert_eq!(layer(&layers, "nope"), None);
}
