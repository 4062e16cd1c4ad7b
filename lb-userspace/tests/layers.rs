//! The daemon's layers depend one way: a module uses only the layers listed
//! before its own (see lib.rs). Checked on the source, so a `use` that
//! points up fails here rather than in review.

use std::path::Path;

const ORDER: [&str; 7] = [
    "config",
    "model",
    "health",
    "dataplane",
    "telemetry",
    "control",
    "cli",
];

fn rank(name: &str) -> Option<usize> {
    ORDER.iter().position(|n| *n == name)
}

/// Names used as `crate::NAME` or inside `use crate::{NAME::..., NAME}`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find("};").unwrap_or(group.len())];
            // Top-level names of the group: at depth 0, before `::`, `,` or `}`.
            let mut depth = 0;
            let mut word = String::new();
            let mut at_start = true;
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if at_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        word.push(c)
                    }
                    _ if !word.is_empty() => {
                        out.push(std::mem::take(&mut word));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !word.is_empty() {
                out.push(word);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut bad = Vec::new();
    let mut checked = 0;
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let Some(own) = rank(top.trim_end_matches(".rs")) else {
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(&f).unwrap();
        for used in crate_paths(&text) {
            if rank(&used).is_some_and(|r| r > own) {
                bad.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(checked > 20, "only {checked} files found");
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn the_check_sees_grouped_and_plain_paths() {
    let got = crate_paths(
        "use crate::{\n    config::Config,\n    model::{A, B},\n    telemetry,\n};\nlet x = crate::control::run;",
    );
    assert_eq!(got, ["config", "model", "telemetry", "control"]);
}
