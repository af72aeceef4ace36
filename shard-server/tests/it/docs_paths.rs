//! Every repository path named in `README.md`, `docs/*.md` and the `//!` comments of the Rust
//! sources exists: files move (the crate split moved most of them), and a document that points
//! at a file that is gone sends its reader nowhere.
//!
//! A path counts when it starts at a top-level folder of the repository, is relative to the
//! document (starts with two dots), or names a Rust, protobuf or shell source file. A source
//! file name resolves against the document's folder and its ancestors, or as the tail of any
//! file in the repository; globs, absolute paths, URLs and the shared dataset folder are not
//! checked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const TOP_LEVEL: &[&str] = &[
    "shard-server/",
    "operator/",
    "e2e/",
    "docs/",
    "charts/",
    "manifests/",
    "crds/",
    "third_party/",
    ".ci/",
];
const SOURCE_EXTENSIONS: &[&str] = &[".rs", ".proto", ".sh"];

struct Repo {
    /// Every file and folder, relative to the root, with `/` separators.
    entries: BTreeSet<String>,
}

impl Repo {
    fn scan(root: &Path) -> Repo {
        let mut entries = BTreeSet::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                if matches!(name.as_str(), ".git" | "target" | "node_modules") {
                    continue;
                }
                let path = rel.join(&name);
                entries.insert(path.to_string_lossy().replace('\\', "/"));
                if entry.file_type().unwrap().is_dir() {
                    stack.push(path);
                }
            }
        }
        Repo { entries }
    }

    fn has(&self, rel: &str) -> bool {
        self.entries.contains(normalize(rel).trim_end_matches('/'))
    }

    fn has_tail(&self, tail: &str) -> bool {
        let tail = tail.trim_end_matches('/');
        self.entries
            .iter()
            .any(|e| e == tail || e.ends_with(&format!("/{tail}")))
    }
}

/// `a/b/../c` → `a/c`; `./a` → `a`. A path that climbs above the root comes back with `..`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if path.ends_with('/') {
        joined + "/"
    } else {
        joined
    }
}

/// The candidate paths of one line: runs of path characters that look like repository paths.
fn candidates(line: &str) -> Vec<&str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || "_.-/".contains(c)))
        .map(|t| t.trim_end_matches(['.', ',', ':', ';']))
        .filter(|t| !t.is_empty() && !t.starts_with('/') && !t.contains("shared/"))
        .filter(|t| !t.starts_with("target/"))
        // Hidden names (`.vecshardctl/…`, a bare `.proto`) are not repository paths, except the
        // CI folder and paths relative to the document.
        .filter(|t| !t.starts_with('.') || t.starts_with(".ci/") || t.starts_with("../"))
        .filter(|t| {
            t.starts_with("../")
                || TOP_LEVEL.iter().any(|top| t.starts_with(top))
                || SOURCE_EXTENSIONS.iter().any(|ext| t.ends_with(ext))
        })
        .collect()
}

/// Whether `path`, named in the file at `source` (relative to the root), exists.
fn resolves(repo: &Repo, source: &str, path: &str) -> bool {
    let dir = source.rsplit_once('/').map_or("", |(d, _)| d);
    if path.starts_with("../") {
        let target = normalize(&format!("{dir}/{path}"));
        // Outside the repository (`../shared/...`): not ours to check.
        return target.starts_with("..") || repo.has(&target);
    }
    if repo.has(path) {
        return true;
    }
    let mut ancestor = dir;
    loop {
        if repo.has(&format!("{ancestor}/{path}")) {
            return true;
        }
        match ancestor.rsplit_once('/') {
            Some((up, _)) => ancestor = up,
            None if !ancestor.is_empty() => ancestor = "",
            None => break,
        }
    }
    let top_level = TOP_LEVEL.iter().any(|top| path.starts_with(top));
    !top_level && repo.has_tail(path)
}

#[test]
fn every_path_named_in_the_docs_and_module_comments_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap();
    let repo = Repo::scan(&root);
    let mut missing = Vec::new();
    for file in &repo.entries {
        let markdown = file == "README.md" || (file.starts_with("docs/") && file.ends_with(".md"));
        let rust = file.ends_with(".rs") && !file.starts_with("third_party/");
        if !markdown && !rust {
            continue;
        }
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            if rust && !line.trim_start().starts_with("//!") {
                continue;
            }
            for path in candidates(line) {
                if !resolves(&repo, file, path) {
                    missing.push(format!("{file}:{}: {path}", n + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths named but not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_path_check_catches_a_moved_file() {
    let repo = Repo {
        entries: [
            "docs",
            "docs/api.md",
            "shard-server",
            "shard-server/router",
            "shard-server/router/src",
            "shard-server/router/src/h2_channel.rs",
        ]
        .map(String::from)
        .into(),
    };
    let named = |line| {
        candidates(line)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        named("see `shard-server/router/src/h2_channel.rs` and [api](../docs/api.md)."),
        vec!["shard-server/router/src/h2_channel.rs", "../docs/api.md"]
    );
    assert!(resolves(
        &repo,
        "docs/api.md",
        "shard-server/router/src/h2_channel.rs"
    ));
    assert!(resolves(&repo, "docs/api.md", "router/src/h2_channel.rs"));
    assert!(resolves(&repo, "docs/x.md", "../docs/api.md"));
    assert!(!resolves(
        &repo,
        "docs/api.md",
        "shard-server/src/router/channel.rs"
    ));
    assert!(!resolves(&repo, "docs/api.md", "router/channel.rs"));
    assert!(!resolves(&repo, "docs/x.md", "../docs/gone.md"));
    // Globs and bare extensions are not paths.
    assert!(named("proto/vecshard/v1/*.proto")
        .iter()
        .all(|p| p != ".proto"));
}
