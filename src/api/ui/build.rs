//! Cargo build script (`build = "src/api/ui/build.rs"`): embeds the web UI in the binary.
//!
//! It reads `src/api/ui/index.html`, `src/api/ui/app/**` and `src/api/ui/vendor/**` (nothing
//! else from that directory), computes the assets' hash H (the first 16 hex digits of SHA-256
//! over the (path, content) pairs sorted by path, each part preceded by its length as 8 bytes
//! little-endian), replaces every `@ASSETS@` in index.html with `/ui/H`, and writes each file
//! plain and gzip-compressed (kept only when smaller) into `$OUT_DIR/ui/`, with
//! `$OUT_DIR/ui_assets.rs` listing them for `src/api/ui.rs` to `include!`.
//! Editing any file below `src/api/ui/` reruns it (`cargo:rerun-if-changed` on the directory,
//! which Cargo scans recursively).

use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn Error>>;

const UI_DIR: &str = "src/api/ui";
/// The directories below `UI_DIR` whose files are served under `/ui/H/`.
const TREES: &[&str] = &["app", "vendor"];
const PLACEHOLDER: &str = "@ASSETS@";

fn main() -> Res<()> {
    println!("cargo:rerun-if-changed={UI_DIR}");
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest).join(UI_DIR);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let index_path = root.join("index.html");
    let index = std::fs::read(&index_path)
        .map_err(|e| format!("the web UI's {} cannot be read: {e}", index_path.display()))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for tree in TREES {
        let dir = root.join(tree);
        if dir.is_dir() {
            collect(&dir, tree, &mut files)?;
        }
    }
    files.push(("index.html".to_owned(), index));
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let mut h = Sha256::new();
    for (path, content) in &files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((content.len() as u64).to_le_bytes());
        h.update(content);
    }
    let hash = hex(&h.finalize())[..16].to_owned();
    let prefix = format!("/ui/{hash}");

    let dest = out.join("ui");
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    std::fs::create_dir_all(&dest)?;

    let mut code = String::new();
    writeln!(
        code,
        "/// H: the hash in the assets' URLs (`/ui/H/<path>`)."
    )?;
    writeln!(code, "pub const HASH: &str = {hash:?};")?;
    let mut assets = String::new();
    let mut index_entry = String::new();
    for (i, (path, content)) in files.iter().enumerate() {
        let content = if path == "index.html" {
            replace(content, PLACEHOLDER.as_bytes(), prefix.as_bytes())
        } else {
            content.clone()
        };
        let entry = entry(&dest, i, path, &content)?;
        if path == "index.html" {
            index_entry = entry;
        } else {
            assets.push_str(&entry);
            assets.push_str(",\n");
        }
    }
    writeln!(code, "/// The entry page, `{PLACEHOLDER}` replaced.")?;
    writeln!(code, "pub static INDEX: Asset = {index_entry};")?;
    writeln!(code, "/// Every asset under `/ui/H/`, sorted by path.")?;
    writeln!(code, "pub static ASSETS: &[Asset] = &[\n{assets}];")?;
    std::fs::write(out.join("ui_assets.rs"), code)?;
    Ok(())
}

/// Writes one file plain and (when smaller) gzipped under `dest`; its `Asset` literal.
fn entry(dest: &Path, i: usize, path: &str, content: &[u8]) -> Res<String> {
    let plain = dest.join(format!("{i}"));
    std::fs::write(&plain, content)?;
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    enc.write_all(content)?;
    let gz = enc.finish()?;
    let gzip = if gz.len() < content.len() {
        let p = dest.join(format!("{i}.gz"));
        std::fs::write(&p, &gz)?;
        format!("Some(include_bytes!({:?}))", p.display().to_string())
    } else {
        "None".to_owned()
    };
    let etag = format!("\"{}\"", &hex(&Sha256::digest(content))[..20]);
    Ok(format!(
        "Asset {{ path: {path:?}, mime: {mime:?}, etag: {etag:?}, plain: include_bytes!({plain:?}), gzip: {gzip} }}",
        mime = mime(path),
        plain = plain.display().to_string(),
    ))
}

/// Every regular file below `dir` (following symlinks), as (`prefix/relative/path`, bytes);
/// names starting with `.` are left out.
fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> Res<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| format!("UI file name is not UTF-8: {n:?}"))?;
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let rel = format!("{prefix}/{name}");
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect(&path, &rel, out)?;
        } else if meta.is_file() {
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The Content-Type of a UI file, by its extension.
fn mime(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" | "md" => "text/plain; charset=utf-8",
        // LICENSE, NOTICE and the like.
        "" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
