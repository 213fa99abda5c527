//! Tidy: no import circle between folders. The module graph is built from the source text:
//! a file imports another when it names it in a `use` path (`crate::`, `$crate::`, `super::`,
//! `self::`, or a child module of its own) or in a `crate::a::b` / `super::a` path in its code;
//! the path is resolved to the file of the deepest module it names. A circle among files of one
//! folder is a module's own business; a circle that crosses folders means a layer imports one
//! above it, so the test fails and names the circle with what ties it. A second test refuses
//! what would hide an import from this reading (a `#[path]`, an `include!`, another name for the
//! crate root). Only a file's unit-test module is left out (`#[cfg(test)] mod …` to its closing
//! brace); any other `#[cfg(test)]` item is read, so it cannot hide the rest of its file.

use std::collections::{BTreeMap, BTreeSet};

/// `from → to → the names `from` takes from `to``, between files relative to the crate root.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The module path of a source file under `src/` (`src/a/mod.rs` and `src/a.rs` are both `a`),
/// or `None` for a file that is no module of the library (`main.rs`, the tidy tests).
fn module_of(path: &str) -> Option<Vec<String>> {
    let inner = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    if inner == "main" || inner == "tidy" || inner.starts_with("tidy/") {
        return None;
    }
    let mut segments: Vec<String> = inner.split('/').map(str::to_owned).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    Some(segments)
}

/// The folder a file belongs to: the directory of its module's children. `src/a/mod.rs`,
/// `src/a.rs` (when `src/a/` holds its children) and `src/a/b.rs` are all in `src/a`.
fn folder_of(path: &str, modules: &BTreeMap<Vec<String>, String>) -> String {
    let module = module_of(path).unwrap_or_default();
    let has_children = modules
        .keys()
        .any(|m| m.len() == module.len() + 1 && m.starts_with(&module));
    let dir = if path.ends_with("/mod.rs") || path == "src/lib.rs" || has_children {
        &module[..]
    } else {
        &module[..module.len().saturating_sub(1)]
    };
    std::iter::once("src".to_owned())
        .chain(dir.iter().cloned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The text the graph reads: no comment lines, and no unit-test module (a top-level
/// `#[cfg(test)]` right before `mod`, up to its closing brace), however many a file has.
fn code(text: &str) -> String {
    let mut text = text.to_owned();
    let mut from = 0;
    while let Some(found) = text[from..].find("\n#[cfg(test)]\nmod ") {
        let start = from + found;
        let line_end = text[start + 1..]
            .find('\n')
            .map_or(text.len(), |at| start + 1 + at);
        let line_end = text[line_end + 1..]
            .find('\n')
            .map_or(text.len(), |at| line_end + 1 + at);
        // `mod name;` declares a file (read on its own): only an inline `mod name {` is cut.
        if !text[start..line_end].trim_end().ends_with('{') {
            from = line_end;
            continue;
        }
        let end = text[start..]
            .find("\n}\n")
            .map_or(text.len(), |at| start + at + 3);
        text.replace_range(start..end, "\n");
        from = start;
    }
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path of a use tree, spelled out: `a::{b, c::{d as e, self}}` gives `a::b`, `a::c::d`
/// and `a::c`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        let path = path.strip_suffix("::*").unwrap_or(path);
        return vec![path.strip_suffix("::self").unwrap_or(path).to_owned()];
    };
    let prefix = tree[..open].trim_end_matches(':');
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start, mut items) = (0, 0, Vec::new());
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand)
        .map(|path| match path.as_str() {
            "self" => prefix.to_owned(),
            _ if prefix.is_empty() => path,
            _ => format!("{prefix}::{path}"),
        })
        .collect()
}

/// Where a `use` declaration starts in `statement` (text up to and including one `;`).
fn use_start(statement: &str) -> Option<usize> {
    let mut offset = 0;
    for line in statement.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let body = ["pub ", "pub(crate) ", "pub(super) "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        if body.starts_with("use ") {
            return Some(offset + line.len() - body.len());
        }
        offset += line.len();
    }
    None
}

/// The paths a file names: those of its `use` declarations, and the `crate::`, `super::`,
/// `self::` and `child::` paths in the rest of its code (`children`: its child modules' names).
fn paths(code: &str, children: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = String::new();
    for statement in code.split_inclusive(';') {
        match use_start(statement) {
            Some(at) => {
                rest.push_str(&statement[..at]);
                let tree = statement[at..].trim_start_matches("use ");
                found.extend(expand(tree.trim_end_matches(';')));
            }
            None => rest.push_str(statement),
        }
    }
    let roots = ["crate", "super", "self"].map(str::to_owned);
    for root in roots.iter().chain(children).map(|name| format!("{name}::")) {
        for (at, _) in rest.match_indices(&root) {
            let before = rest[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(path.trim_end_matches(':').to_owned());
        }
    }
    found
}

/// The file a path names from `module`, and the names it takes there; `None` for a path
/// outside the crate.
fn resolve(
    path: &str,
    module: &[String],
    modules: &BTreeMap<Vec<String>, String>,
) -> Option<(String, String)> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    let first = segments.next()?;
    let mut absolute: Vec<String> = match first {
        "crate" | "$crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => module[..module.len().checked_sub(1)?].to_vec(),
        child => {
            let mut own = module.to_vec();
            own.push(child.to_owned());
            modules.get(&own)?;
            own
        }
    };
    for segment in segments {
        match segment {
            "super" => {
                absolute.pop()?;
            }
            other => absolute.push(other.to_owned()),
        }
    }
    let depth = (0..=absolute.len())
        .rev()
        .find(|&n| modules.contains_key(&absolute[..n]))?;
    let names = absolute[depth..].join("::");
    Some((modules[&absolute[..depth]].clone(), names))
}

/// The graph of `files` (`(path, text)`, paths relative to the crate root).
fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .filter_map(|(path, _)| Some((module_of(path)?, path.clone())))
        .collect();
    let mut graph = Graph::new();
    for (path, text) in files {
        let Some(module) = module_of(path) else {
            continue;
        };
        let children: Vec<String> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(&module))
            .filter_map(|m| m.last().cloned())
            .collect();
        let edges = graph.entry(path.clone()).or_default();
        for named in paths(&code(text), &children) {
            if let Some((to, names)) = resolve(&named, &module, &modules)
                && to != *path
            {
                let names = if names.is_empty() {
                    "(the module)"
                } else {
                    &names
                };
                edges.entry(to).or_default().insert(names.to_owned());
            }
        }
    }
    // The servers build.rs generates into proto.rs name the codec (the only crate path it gives
    // generated code, checked by `nothing_hides_an_import_from_the_module_graph`).
    if let Some(edges) = graph.get_mut("src/proto.rs")
        && modules.values().any(|path| path == "src/codec.rs")
    {
        let names = edges.entry("src/codec.rs".to_owned()).or_default();
        names.insert("Codec (in the code build.rs generates)".to_owned());
    }
    graph
}

/// The circles of `graph`: its strongly connected components of more than one file, each
/// sorted, found by keeping the files that reach a file and that it reaches.
fn circles(graph: &Graph) -> Vec<BTreeSet<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.clone()];
        while let Some(file) = pending.pop() {
            for to in graph.get(&file).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(to.clone()) {
                    pending.push(to.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|file| (file, reach(file))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (file, reaches) in &reached {
        if !reaches.contains(*file) || found.iter().any(|c| c.contains(*file)) {
            continue;
        }
        let circle: BTreeSet<String> = reaches
            .iter()
            .filter(|other| reached.get(other).is_some_and(|r| r.contains(*file)))
            .cloned()
            .collect();
        if circle.len() > 1 {
            found.push(circle);
        }
    }
    found
}

/// A circle in words: its files, then each arrow inside it with the names it carries.
fn describe(circle: &BTreeSet<String>, graph: &Graph) -> String {
    let files: Vec<&str> = circle.iter().map(String::as_str).collect();
    let mut text = format!("circle of {} files: {}", files.len(), files.join(", "));
    for from in circle {
        for (to, names) in &graph[from] {
            if circle.contains(to) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                text.push_str(&format!("\n  {from} -> {to}: {}", names.join(", ")));
            }
        }
    }
    text
}

/// The circles of `files` whose files lie in more than one folder, described.
fn circles_across_folders(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .filter_map(|(path, _)| Some((module_of(path)?, path.clone())))
        .collect();
    let graph = graph(files);
    circles(&graph)
        .into_iter()
        .filter(|circle| {
            let folders: BTreeSet<String> = circle.iter().map(|f| folder_of(f, &modules)).collect();
            folders.len() > 1
        })
        .map(|circle| describe(&circle, &graph))
        .collect()
}

#[test]
fn no_import_circle_crosses_a_folder() {
    let circles = circles_across_folders(&super::sources("src"));
    assert!(circles.is_empty(), "{}", circles.join("\n"));
}

/// The layers ARCHITECTURE.md lists under "## Layers", top first: each a numbered line whose
/// backticked names, after its colon, are the top-level modules of `src/` in that layer.
fn layers(doc: &str) -> BTreeMap<String, usize> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("ARCHITECTURE.md has a \"## Layers\" section");
    let mut layer_of = BTreeMap::new();
    for (layer, line) in section
        .lines()
        .filter(|l| {
            l.split_once(". **")
                .is_some_and(|(n, _)| n.parse::<usize>().is_ok())
        })
        .enumerate()
    {
        let names = line.split_once(':').map_or("", |(_, names)| names);
        for name in names.split('`').skip(1).step_by(2) {
            let earlier = layer_of.insert(name.to_owned(), layer);
            assert!(earlier.is_none(), "`{name}` is listed in two layers");
        }
    }
    layer_of
}

/// The arrows of `files` that run from a layer up to one above it, described; and the top-level
/// modules no layer lists.
fn against_the_layers(
    files: &[(String, String)],
    layer_of: &BTreeMap<String, usize>,
) -> Vec<String> {
    let top = |path: &str| module_of(path).and_then(|m| m.first().cloned());
    let mut wrong = Vec::new();
    for (path, _) in files {
        if let Some(module) = top(path)
            && !layer_of.contains_key(&module)
        {
            wrong.push(format!("{path}: module `{module}` is in no layer"));
        }
    }
    for (from, edges) in graph(files) {
        let Some(from_layer) = top(&from).and_then(|m| layer_of.get(&m).copied()) else {
            continue;
        };
        for (to, names) in edges {
            let to_layer = top(&to).and_then(|m| layer_of.get(&m).copied());
            if to_layer.is_some_and(|to_layer| to_layer < from_layer) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                wrong.push(format!(
                    "{from} -> {to} runs up a layer: {}",
                    names.join(", ")
                ));
            }
        }
    }
    wrong
}

#[test]
fn every_import_points_down_the_layers_architecture_md_lists() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md");
    let wrong = against_the_layers(&super::sources("src"), &layers(&doc));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn nothing_hides_an_import_from_the_module_graph() {
    // Each of these would make the graph above read another text than the compiler does: a
    // module file moved by `#[path]`, text pulled in by `include!`, or the crate root under a
    // name that is not `crate` (its paths would not start with `crate::`).
    let hiding = [
        "#[path",
        "include!(",
        "extern crate self",
        "use crate as",
        "crate::{self",
    ];
    // The one exception: code build.rs generates into OUT_DIR (as `tonic::include_proto!` does
    // too). Its only path into the crate is the codec build.rs names, checked here, and the
    // codec and `proto.rs` are in one folder, so no circle across folders can hide in it.
    let build = std::fs::read_to_string("build.rs").expect("build.rs");
    let named: Vec<&str> = build
        .match_indices("crate::")
        .map(|(at, _)| build[at..].split(['"', ' ', ';']).next().unwrap_or(""))
        .collect();
    assert!(
        named.iter().all(|p| *p == "crate::codec::Codec"),
        "build.rs makes generated code name {named:?}: add those arrows to the graph"
    );
    let generated = |line: &str| line.contains("include!(concat!(env!(\"OUT_DIR\")");
    let mut offenders = Vec::new();
    for (path, text) in super::sources("src") {
        if module_of(&path).is_none() {
            continue;
        }
        for line in code(&text).lines() {
            if hiding.iter().any(|h| line.contains(h)) && !generated(line) {
                offenders.push(format!("{path}: {}", line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    }

    #[test]
    fn a_circle_through_two_folders_is_found_and_named() {
        let found = circles_across_folders(&files(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a/mod.rs", "use crate::b::{Two, three::Three};\n"),
            ("src/b/mod.rs", "pub struct Two;\n"),
            ("src/b/three.rs", "fn f() { crate::a::One::new(); }\n"),
        ]));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("circle of 2 files: src/a/mod.rs, src/b/three.rs"));
        assert!(found[0].contains("src/a/mod.rs -> src/b/three.rs: Three"));
        assert!(found[0].contains("src/b/three.rs -> src/a/mod.rs: One::new"));
    }

    #[test]
    fn layers_that_point_one_way_have_no_circle() {
        let found = circles_across_folders(&files(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            (
                "src/a/mod.rs",
                "mod x;\nuse crate::b::Two;\nfn f() { x::X::new(); }\n",
            ),
            ("src/a/x.rs", "use super::super::b::Two;\n"),
            ("src/b/mod.rs", "pub struct Two;\n"),
        ]));
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn a_circle_inside_one_folder_is_that_folder_s_business() {
        let graph = graph(&files(&[
            ("src/lib.rs", "mod a;\n"),
            ("src/a.rs", "mod b;\nuse b::B;\n"),
            ("src/a/b.rs", "use super::A;\n"),
        ]));
        assert_eq!(circles(&graph).len(), 1);
        let found = circles_across_folders(&files(&[
            ("src/lib.rs", "mod a;\n"),
            ("src/a.rs", "mod b;\nuse b::B;\n"),
            ("src/a/b.rs", "use super::A;\n"),
        ]));
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn use_trees_are_spelled_out() {
        assert_eq!(
            expand("crate::a::{b, c::{d as e, self}, f::*}"),
            [
                "crate::a::b",
                "crate::a::c::d",
                "crate::a::c",
                "crate::a::f"
            ]
        );
    }

    #[test]
    fn the_unit_test_module_is_not_read() {
        let text = "use crate::a::A;\n\n#[cfg(test)]\nmod tests {\n    use crate::b::B;\n}\n\
                    #[cfg(test)]\nfn helper() { crate::c::C::new(); }\n\
                    #[cfg(test)]\nmod more {\n    use crate::d::D;\n}\n";
        assert_eq!(paths(&code(text), &[]), ["crate::a::A", "crate::c::C::new"]);
        // A test-only module declared by name is a file of its own: what follows it is read.
        let text =
            "#[cfg(test)]\nmod tidy;\nuse crate::y::Y;\npub mod f {\n    use crate::z::Z;\n}\n";
        assert_eq!(
            paths(&code(&format!("\n{text}")), &[]),
            ["crate::y::Y", "crate::z::Z"]
        );
    }
}
