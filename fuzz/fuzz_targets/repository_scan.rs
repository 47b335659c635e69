//! The repository scanner over a small tree the input describes, one entry a line:
//! `d PATH` (a directory), `f PATH TEXT` (a file; `\n` in TEXT is a newline), `l PATH TARGET`
//! (a symlink; `@root` and `@out` in TARGET stand for the repository and a directory beside it).
//! PATH components come from the input (anything but empty, `.` and `..`); TARGET is anything:
//! `..`, absolute, loops. Whatever the tree, nothing the scan returns may resolve outside the
//! root, and every file read through the checked open lies inside it.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferroserve::registry::open::read_inside;
use ferroserve::registry::repository::{
    parse_version, scan, scan_one, valid_model_name, Repository, MODEL_FILE,
};
use libfuzzer_sys::fuzz_target;

const MAX_ENTRIES: usize = 32;
const MAX_DEPTH: usize = 6;

/// `<base>/repo` (remade each run) and `<base>/out`: a model, a config and links back into the
/// repository, so a link out can find files that look right.
fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let out = dir.path().join("out");
        fs::create_dir_all(out.join("m/1")).expect("out/m/1");
        fs::write(out.join("m/config.toml"), "backend = \"tract\"\n").expect("config");
        fs::write(out.join("m/1").join(MODEL_FILE), b"onnx").expect("model");
        fs::create_dir_all(out.join("back")).expect("out/back");
        std::os::unix::fs::symlink("../../repo/m/config.toml", out.join("back/config.toml"))
            .expect("link");
        std::os::unix::fs::symlink("../../repo/m/1", out.join("back/1")).expect("link");
        dir
    })
    .path()
}

/// `rel` under `root` when no component is empty, `.` or `..` and no directory on the way is a
/// symlink (so nothing is made outside the root).
fn inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() > MAX_DEPTH
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    let mut path = root.to_path_buf();
    for p in &parts[..parts.len() - 1] {
        path.push(p);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return None;
        }
    }
    Some(path.join(parts[parts.len() - 1]))
}

fn build(root: &Path, out: &Path, text: &str) -> Vec<String> {
    let mut tops = Vec::new();
    for line in text.lines().take(MAX_ENTRIES) {
        let mut words = line.splitn(3, ' ');
        let (Some(kind), Some(rel)) = (words.next(), words.next()) else {
            continue;
        };
        let arg = words.next().unwrap_or("");
        let Some(path) = inside(root, rel) else {
            continue;
        };
        tops.push(rel.split('/').next().unwrap_or("").to_owned());
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = match kind {
            "d" => fs::create_dir_all(&path),
            "f" => fs::write(&path, arg.replace("\\n", "\n")),
            "l" => {
                let target = arg
                    .replace("@root", &root.to_string_lossy())
                    .replace("@out", &out.to_string_lossy());
                std::os::unix::fs::symlink(target, &path)
            }
            _ => Ok(()),
        };
    }
    tops
}

fn resolves_inside(path: &Path, root: &Path) -> bool {
    path.canonicalize().is_ok_and(|real| real.starts_with(root))
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let (root, out) = (base().join("repo"), base().join("out"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("the root");
    let tops = build(&root, &out, text);
    let root = root.canonicalize().expect("a canonical root");

    let repo: Repository = root.as_path().into();
    let mut models = scan(&repo).expect("the root scans");
    for name in tops.iter().filter(|n| valid_model_name(n)) {
        if let Ok(Ok(one)) = scan_one(&repo, name) {
            models.push(one);
        }
    }
    for m in &models {
        assert!(valid_model_name(&m.name), "{:?}", m.name);
        assert_eq!(m.root, root);
        assert_eq!(m.path, root.join(&m.name));
        if !resolves_inside(&m.path, &root) {
            // Listed so the index says why, and nothing under it read.
            assert!(
                m.config.is_err() && m.versions.is_empty(),
                "model {:?} read outside",
                m.name
            );
        }
        for (v, file) in &m.versions {
            assert!(parse_version(&v.to_string()) == Some(*v));
            assert_eq!(*file, m.path.join(v.to_string()).join(MODEL_FILE));
        }
        for (_, file) in m.served_versions() {
            if read_inside(&root, &file).is_ok() {
                assert!(resolves_inside(&file, &root), "{} read", file.display());
            }
        }
    }
});
