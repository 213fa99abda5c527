//! Tidy tests: the claims of ARCHITECTURE.md that neither the compiler nor clippy can check,
//! checked against the source text (as rust-analyzer's tidy tests do). Each test names the rule
//! it keeps and why; a failure names the file and line that broke it.

use std::path::{Path, PathBuf};

mod graph;

/// Every `.rs` file under `dir`, relative to the crate root, with its text.
fn sources(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if root.join(dir).is_file() {
        let text = std::fs::read_to_string(root.join(dir)).expect("a source file");
        return vec![(dir.to_owned(), text)];
    }
    let mut pending = vec![root.join(dir)];
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                let relative = path.strip_prefix(root).expect("under the root");
                files.push((relative.display().to_string(), text));
            }
        }
    }
    files
}

/// The text of a file before its unit tests.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// `(file, line number, line)` of every non-comment line of the files under `dir` (but `skip`)
/// that contains `needle`.
fn lines_with(dir: &str, skip: &[&str], needle: &str) -> Vec<String> {
    sources(dir)
        .iter()
        .filter(|(path, _)| !skip.iter().any(|s| path.starts_with(s)))
        .flat_map(|(path, text)| {
            without_tests(text)
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim_start().starts_with("//"))
                .filter(|(_, line)| line.contains(needle))
                .map(move |(n, line)| format!("{path}:{}: {}", n + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn only_the_server_uses_the_services() {
    // The services are the top of the stack: what they share with others (OMS calls, the
    // idempotency-key metadata name) lives below them, so layers stay one-way.
    let offenders = lines_with("src", &["src/service/", "src/server.rs"], "crate::service");
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn services_and_the_watch_hub_reach_oms_only_through_the_operations_layer() {
    // So no REST request is built, and no upstream error is mapped, in two places.
    for dir in ["src/service", "src/watch"] {
        for client in ["oms_rest", "crate::upstream"] {
            let offenders = lines_with(dir, &[], client);
            assert!(offenders.is_empty(), "{offenders:#?}");
        }
    }
}

#[test]
fn no_rest_operation_is_named_outside_the_rest_client() {
    // REST paths and operation names live in the oms-rest crate (`oms_rest::ops`); everything
    // else gets them from the upstream failure that carries them.
    let mut offenders = Vec::new();
    for verb in ["\"GET /", "\"POST /", "\"PUT /", "\"DELETE /", "\"PATCH /"] {
        offenders.extend(lines_with("src", &["src/tidy.rs"], verb));
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn the_rest_client_knows_nothing_of_protobuf_nor_of_the_gateway() {
    // The crate edge keeps it: oms-rest names no gRPC crate and no path into the gateway, so
    // nothing of protobuf or of the gateway can be imported there (`cargo tree -p oms-rest`
    // shows no tonic or prost).
    let manifest = include_str!("../oms-rest/Cargo.toml");
    let offenders: Vec<&str> = manifest
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(str::trim_start)
        .filter(|line| {
            let named = ["tonic", "prost", "oms-gateway", "oms-sandbox"];
            named.iter().any(|name| line.starts_with(name)) || line.contains("path = \"..")
        })
        .collect();
    assert!(offenders.is_empty(), "oms-rest/Cargo.toml: {offenders:#?}");
}

#[test]
fn every_oms_request_goes_out_through_one_http_client() {
    // Pooling, TLS roots, timeouts and the no-redirect rule are set in one place.
    for client in ["hyper_util::client", "hyper_rustls", "reqwest"] {
        let mut offenders = lines_with("src", &["src/tidy.rs"], client);
        offenders.extend(lines_with(
            "oms-rest/src",
            &["oms-rest/src/transport.rs"],
            client,
        ));
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}

#[test]
fn conversion_and_validation_do_no_io() {
    for file in [
        "src/convert.rs",
        "src/convert/delivery.rs",
        "src/validate.rs",
    ] {
        for io in ["tokio::", "hyper", "std::fs", "std::net"] {
            let offenders = lines_with(file, &[], io);
            assert!(offenders.is_empty(), "{offenders:#?}");
        }
    }
}

#[test]
fn the_sandbox_crate_depends_on_nothing_of_the_gateway() {
    // It is a separate "server": a misreading of the API in the gateway cannot hide in it.
    let manifest = include_str!("../sandbox/Cargo.toml");
    let gateway = manifest
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find(|line| line.trim_start().starts_with("oms-gateway") || line.contains("path = \".."));
    assert_eq!(gateway, None, "sandbox/Cargo.toml depends on the gateway");
    let offenders = lines_with("sandbox/src", &[], "oms_gateway");
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn every_module_says_what_it_owns() {
    let mut files = sources("src");
    files.extend(sources("sandbox/src"));
    files.extend(sources("oms-rest/src"));
    let silent: Vec<&String> = files
        .iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(silent.is_empty(), "no `//!` paragraph: {silent:#?}");
}

#[test]
fn files_and_functions_stay_a_readable_size() {
    const MAX_FILE_LINES: usize = 650;
    const MAX_FN_LINES: usize = 80;
    let mut files = sources("src");
    files.extend(sources("sandbox/src"));
    files.extend(sources("oms-rest/src"));
    let mut offenders = Vec::new();
    for (path, text) in &files {
        let lines: Vec<&str> = without_tests(text).lines().collect();
        if lines.len() > MAX_FILE_LINES {
            offenders.push(format!("{path}: {} lines", lines.len()));
        }
        for (start, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p));
            if !is_fn || !line.ends_with('{') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let closing = format!("{}}}", " ".repeat(indent));
            if let Some(length) = lines[start + 1..].iter().position(|l| *l == closing)
                && length + 1 > MAX_FN_LINES
            {
                offenders.push(format!("{path}:{}: {} lines", start + 1, length + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn the_readme_stays_a_short_read() {
    // What the gateway is, how to start it and a walk-through; everything else is in docs/.
    const MAX_README_BYTES: usize = 15_000;
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let bytes = std::fs::read(readme).expect("README.md").len();
    assert!(
        bytes <= MAX_README_BYTES,
        "README.md is {bytes} bytes; move detail into docs/"
    );
}

/// The repository's tracked text files under `roots` (folders or files), with their text:
/// `git ls-files` when git can say, else a walk that leaves out what is never tracked.
fn tracked_text(roots: &[&str]) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = std::process::Command::new("git")
        .arg("ls-files")
        .arg("--")
        .args(roots)
        .current_dir(root)
        .output()
        .ok()
        .filter(|out| out.status.success() && !out.stdout.is_empty());
    let paths: Vec<String> = match listed {
        Some(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        None => walk(root, roots),
    };
    paths
        .into_iter()
        .filter_map(|path| {
            Some((
                path.clone(),
                std::fs::read_to_string(root.join(&path)).ok()?,
            ))
        })
        .collect()
}

/// Every file under `roots`, but build output, virtual environments and package caches.
fn walk(root: &Path, roots: &[&str]) -> Vec<String> {
    const NEVER: [&str; 6] = ["target", ".venv", "node_modules", "runs", ".tools", ".git"];
    let mut pending: Vec<PathBuf> = roots.iter().map(|r| root.join(r)).collect();
    if roots.contains(&"*.md") {
        let entries = std::fs::read_dir(root).expect("a readable root");
        let docs = entries.map(|e| e.expect("a directory entry").path());
        pending.extend(docs.filter(|p| p.extension().is_some_and(|e| e == "md")));
    }
    let mut files = Vec::new();
    while let Some(path) = pending.pop() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| NEVER.contains(&n.as_str())) {
            continue;
        }
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).expect("a readable directory");
            pending.extend(entries.map(|e| e.expect("a directory entry").path()));
        } else if path.is_file() {
            let relative = path.strip_prefix(root).expect("under the root");
            files.push(relative.display().to_string());
        }
    }
    files
}

/// Where `line` refers to an issue by number: the word (any case, singular or plural) then a
/// number, with or without `#`; or `#` and one to five digits in parentheses. Not a word that
/// contains it (issuer, tissue), an attribute, a store's number or a colour (see the test).
fn issue_reference(line: &str) -> Option<usize> {
    let lower = line.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    for (at, _) in lower.match_indices("issue") {
        if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let after = lower[at + 5..]
            .strip_prefix('s')
            .unwrap_or(&lower[at + 5..]);
        let number = after.trim_start().trim_start_matches('#').trim_start();
        if after.starts_with([' ', '#']) && number.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(at);
        }
    }
    lower.match_indices("(#").map(|(at, _)| at).find(|&at| {
        let digits = lower[at + 2..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        (1..=5).contains(&digits) && bytes.get(at + 2 + digits) == Some(&b')')
    })
}

#[test]
fn no_comment_or_doc_points_outside_the_repository_or_at_an_issue() {
    // A reader has the repository, not our notes beside it or the tracker: say the thing itself.
    const ROOTS: [&str; 12] = [
        "src", "oms-rest", "sandbox", "tests", "docs", "build.rs", "proto", "deploy", "bench",
        "examples", ".ci", "*.md",
    ];
    let outside = concat!("..", "/shared/");
    let mut offenders = Vec::new();
    for (path, text) in tracked_text(&ROOTS) {
        if path.ends_with(".lock") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains(outside) || issue_reference(line).is_some() {
                offenders.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn issue_references_are_told_from_words_that_look_alike() {
    let issue = |n: &str| format!("{}{n}", concat!("iss", "ue"));
    for hit in [
        issue(" 12"),
        issue("s #3"),
        issue(" 7.4:"),
        format!("fixed ({}12)", '#'),
    ] {
        assert!(issue_reference(&hit).is_some(), "{hit}");
    }
    let colour = format!("({}a0b0c0)", '#');
    for miss in [
        "issuer 1",
        "tissue 2",
        "#[derive(Debug)]",
        "CVS Pharmacy #4521",
        &colour,
    ] {
        assert!(issue_reference(miss).is_none(), "{miss}");
    }
    assert!(issue_reference(&format!("({}1234567)", '#')).is_none());
    assert!(issue_reference("the issue is 3 lines long").is_none());
}
