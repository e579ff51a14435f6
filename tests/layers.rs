//! The crate's modules form layers (drawn in `src/lib.rs`): a module may use
//! only modules of a lower layer, so the arrows run one way — the server
//! uses the routes, the routes use the store and the proxy, and the proxy
//! knows nothing of PATs. This reads every source file under `src/` and
//! fails on any `crate::<module>` path (in `use` lines, in code, in doc
//! links, in tests) that points sideways or up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module's layer; higher layers use lower ones.
const LAYERS: &[(&str, u8)] = &[
    ("bench_support", 10),
    ("fuzzing", 10),
    ("server", 9),
    ("demo", 9),
    ("router", 8),
    ("api", 7),
    ("embed", 7),
    ("helper", 7),
    ("state", 6),
    ("session", 5),
    ("limits", 5),
    ("assertion", 5),
    ("proxy", 5),
    ("tls", 5),
    ("config", 4),
    ("telemetry", 4),
    ("token", 3),
    ("error", 3),
    ("body", 2),
    ("query", 2),
    ("drain", 2),
    ("metrics", 2),
    ("request_id", 2),
    ("certs", 2),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|&(_, rank)| rank)
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

#[test]
fn no_module_uses_a_module_of_its_own_layer_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
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
        let rank = layer(&module).unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"));
        let text = std::fs::read_to_string(file).expect("read a source file");
        for used in uses(&text) {
            if used == module {
                continue;
            }
            // Macros exported at the crate root are not modules.
            let Some(used_rank) = layer(&used) else { continue };
            if used_rank >= rank {
                wrong
                    .entry(file.display().to_string())
                    .or_insert_with(Vec::new)
                    .push(format!("{module} (layer {rank}) uses {used} (layer {used_rank})"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that point sideways or up:\n{wrong:#?}");
}

#[test]
fn the_check_sees_grouped_and_inline_paths() {
    let text = "use crate::{api, embed::Local};\nlet x = crate::state::State::build();\n/// [`crate::proxy`]";
    assert_eq!(uses(text), ["api", "embed", "state", "proxy"]);
    assert_eq!(layer("server"), Some(9));
    assert_eq!(layer("nope"), None);
}
