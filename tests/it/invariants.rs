//! The invariants of `src/lib.rs`, enforced by reading the source instead of trusting review:
//! the domain names no gRPC crate, store engine, file system, network or clock; nothing outside
//! `src/store/` names fjall or sled; no key is laid out outside `service::schema`; the rings
//! stay apart (the gRPC layer names no stored record, the service no RPC message); `Cargo.lock`
//! holds ring and no second crypto provider; no code of `rxgate` or `loadtest` outside tests
//! names `CARGO_MANIFEST_DIR`, the build machine's source folder, which a copied binary lacks.
//! The source is read as syntax (syn): `use` items, paths, method calls and the tokens of a
//! macro's input count; comments, doc comments and literals, where module headers and config
//! strings name these crates, never do. Each rule is also run over fixtures that break it
//! (`tests/invariants/fixtures/`), which shows that it can fail.

use std::{
    collections::HashMap,
    fmt, fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use proc_macro2::{Delimiter, Ident, Spacing, Span, TokenStream, TokenTree};
use serde::Deserialize;
use syn::{
    Expr, ExprLit, Lit, Token, UseTree,
    parse::Parser,
    punctuated::Punctuated,
    visit::{self, Visit},
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/invariants/fixtures").join(name)
}

/// The `.rs` files under `dir`, at any depth, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A name the code uses: a path as written, without a leading `::` (`std::fs::read`), or the
/// name of a called method (`elapsed`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Path(Vec<String>),
    Method(String),
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Path(segments) => write!(f, "{}", segments.join("::")),
            Name::Method(method) => write!(f, ".{method}()"),
        }
    }
}

/// A name and the line it is on.
struct Named {
    line: usize,
    name: Name,
}

/// Collects the names of one file's code.
#[derive(Default)]
struct Names {
    found: Vec<Named>,
    /// What each name a `use` or `extern crate` brings in stands for: `fs` → `std::fs`, and for
    /// `use std::time::SystemTime as Wall`, `Wall` → `std::time::SystemTime`.
    imports: HashMap<String, Vec<String>>,
}

impl Names {
    /// The names of `source`'s code, each path's first segment replaced by what a `use` of the
    /// same file brought in under that name (`Wall::now` → `std::time::SystemTime::now`), so that
    /// a short or renamed import hides nothing. Scopes are not followed: within one file a name
    /// imported anywhere is taken to stand for one thing.
    fn of(source: &str) -> syn::Result<Vec<Named>> {
        let mut names = Names::default();
        names.visit_file(&syn::parse_file(source)?);
        let Names { mut found, imports } = names;
        for named in &mut found {
            if let Name::Path(path) = &mut named.name
                && let Some(full) = path.first().and_then(|first| imports.get(first))
            {
                path.splice(..1, full.iter().cloned());
            }
        }
        Ok(found)
    }

    fn push(&mut self, at: Span, name: Name) {
        let line = at.start().line;
        self.found.push(Named { line, name });
    }

    /// Records the paths of a `use` tree below `prefix`, one per name it brings in.
    fn use_tree(&mut self, tree: &UseTree, mut prefix: Vec<String>) {
        match tree {
            UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(&path.tree, prefix);
            }
            UseTree::Name(name) => self.import(prefix, &name.ident, None),
            UseTree::Rename(rename) => self.import(prefix, &rename.ident, Some(&rename.rename)),
            UseTree::Glob(glob) => self.push(glob.star_token.spans[0], Name::Path(prefix)),
            UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(tree, prefix.clone());
                }
            }
        }
    }

    /// Records `use prefix::ident` (or `prefix::{self}`), and what the name it brings in, `alias`
    /// if renamed, stands for.
    fn import(&mut self, mut path: Vec<String>, ident: &Ident, alias: Option<&Ident>) {
        if ident != "self" {
            path.push(ident.to_string());
        }
        let local = match alias {
            Some(alias) => Some(alias.to_string()),
            None => path.last().cloned(),
        };
        if let Some(local) = local.filter(|local| local != "_") {
            self.imports.insert(local, path.clone());
        }
        self.push(ident.span(), Name::Path(path));
    }

    /// Records the paths and method calls among a macro's input, which syn leaves as tokens:
    /// `assert!(tokio::fs::write(p, b).await.is_ok())` still writes a file. A literal is a
    /// token of its own and a comment is no token, so neither can count.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            let leading_colon = path_separator_at(&tokens, i);
            let start = if leading_colon { i + 2 } else { i };
            let Some(TokenTree::Ident(first)) = tokens.get(start) else {
                if let TokenTree::Group(group) = &tokens[i] {
                    self.tokens(group.stream());
                }
                i += 1;
                continue;
            };
            let mut segments = vec![first.to_string()];
            let mut end = start + 1;
            while path_separator_at(&tokens, end)
                && let Some(TokenTree::Ident(next)) = tokens.get(end + 2)
            {
                segments.push(next.to_string());
                end += 3;
            }
            let after_dot = matches!(i.checked_sub(1).map(|before| &tokens[before]),
                Some(TokenTree::Punct(dot)) if dot.as_char() == '.');
            let called = matches!(tokens.get(end),
                Some(TokenTree::Group(args)) if args.delimiter() == Delimiter::Parenthesis);
            if leading_colon || segments.len() > 1 {
                self.push(first.span(), Name::Path(segments));
            } else if after_dot && called {
                self.push(first.span(), Name::Method(segments.remove(0)));
            }
            i = end;
        }
    }
}

/// Whether `tokens[i..]` starts with `::`.
fn path_separator_at(tokens: &[TokenTree], i: usize) -> bool {
    matches!((tokens.get(i), tokens.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, Vec::new());
    }

    fn visit_item_extern_crate(&mut self, item: &'ast syn::ItemExternCrate) {
        let alias = item.rename.as_ref().map(|(_, alias)| alias);
        self.import(Vec::new(), &item.ident, alias);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        // One segment without a leading `::` is a local, or a name in scope that a `use` of
        // the file already recorded; never a crate.
        if let Some(first) = path.segments.first()
            && (path.segments.len() > 1 || path.leading_colon.is_some())
        {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.push(first.ident.span(), Name::Path(segments));
        }
        visit::visit_path(self, path);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.push(call.method.span(), Name::Method(call.method.to_string()));
        visit::visit_expr_method_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// A rule over names: why it forbids `name`, or `None`.
type Rule = fn(&Name) -> Option<&'static str>;

/// A name a rule forbids, where it is and why.
struct Violation {
    file: PathBuf,
    line: usize,
    name: Name,
    why: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.strip_prefix(root()).unwrap_or(&self.file);
        write!(
            f,
            "{}:{}: `{}` ({})",
            file.display(),
            self.line,
            self.name,
            self.why
        )
    }
}

/// What `rule` forbids in `files`. A file that does not parse fails the test: it would
/// otherwise pass unread.
fn check(files: &[PathBuf], rule: Rule) -> Vec<Violation> {
    let mut violations = Vec::new();
    for file in files {
        let source =
            fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let names = Names::of(&source).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        violations.extend(names.into_iter().filter_map(|Named { line, name }| {
            let why = rule(&name)?;
            Some(Violation {
                file: file.clone(),
                line,
                name,
                why,
            })
        }));
    }
    violations
}

/// The names reported, as written, in order: what a fixture's test compares.
fn reported(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(|v| v.name.to_string()).collect()
}

fn assert_none(violations: &[Violation]) {
    let list: Vec<String> = violations.iter().map(Violation::to_string).collect();
    assert!(
        list.is_empty(),
        "{} violations:\n{}",
        list.len(),
        list.join("\n")
    );
}

fn starts_with(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(segment, p)| segment == p)
}

/// The store engines: only `src/store/` may name them.
const ENGINES: [&str; 2] = ["fjall", "sled"];

/// Forbids any path with an engine among its segments: the crate, and `store::sled` too.
fn engine_rule(name: &Name) -> Option<&'static str> {
    match name {
        Name::Path(path) if path.iter().any(|s| ENGINES.contains(&s.as_str())) => {
            Some("a store engine")
        }
        _ => None,
    }
}

/// The path prefixes the domain may not name, and why.
const DOMAIN_FORBIDS: [(&[&str], &str); 14] = [
    (&["tonic"], "gRPC"),
    (&["tonic_health"], "gRPC"),
    (&["tonic_prost"], "gRPC"),
    (&["tonic_reflection"], "gRPC"),
    (&["tonic_types"], "gRPC"),
    (&["prost"], "gRPC"),
    (&["prost_types"], "gRPC"),
    (&["prost_reflect"], "gRPC"),
    (
        &["crate", "wire"],
        "the wire types: generated prost types, documents, JSON",
    ),
    (&["crate", "grpc"], "gRPC: the adapter"),
    (&["std", "fs"], "the file system"),
    (&["tokio", "fs"], "the file system"),
    (&["std", "net"], "the network"),
    (&["tokio", "net"], "the network"),
];

/// The calls that read a clock: a type, then the function.
const CLOCK_READS: [[&str; 2]; 6] = [
    ["SystemTime", "now"],
    ["SystemTime", "elapsed"],
    ["Instant", "now"],
    ["Instant", "elapsed"],
    ["Utc", "now"],
    ["Local", "now"],
];

/// Forbids what the domain may not depend on: gRPC, a store engine, the file system, the
/// network, the clock (time comes in as a parameter). `.elapsed()` is forbidden on any receiver:
/// on a `SystemTime` or an `Instant`, `UNIX_EPOCH.elapsed()` among them, it reads the clock.
fn domain_rule(name: &Name) -> Option<&'static str> {
    let path = match name {
        Name::Method(method) => return (method == "elapsed").then_some("the clock"),
        Name::Path(path) => path,
    };
    let reads_clock = path
        .windows(2)
        .any(|pair| CLOCK_READS.iter().any(|read| pair == read));
    engine_rule(name)
        .or_else(|| {
            DOMAIN_FORBIDS
                .iter()
                .find(|(prefix, _)| starts_with(path, prefix))
                .map(|(_, why)| *why)
        })
        .or_else(|| reads_clock.then_some("the clock"))
}

/// The `.rs` files of the folder `src/{dir}`, which must hold `mod.rs` and `file`: a folder
/// moved or emptied fails the test rather than passing unread.
fn source_files(dir: &str, file: &str) -> Vec<PathBuf> {
    let dir = root().join("src").join(dir);
    let files = rust_files(&dir);
    for known in ["mod.rs", file] {
        assert!(
            files.contains(&dir.join(known)),
            "{} not found",
            dir.join(known).display()
        );
    }
    files
}

#[test]
fn the_domain_names_no_grpc_engine_file_system_network_or_clock() {
    assert_none(&check(
        &source_files("domain", "prescription.rs"),
        domain_rule,
    ));
}

#[test]
fn only_the_store_names_a_store_engine() {
    let store = root().join("src/store");
    let files: Vec<PathBuf> = rust_files(&root().join("src"))
        .into_iter()
        .filter(|file| !file.starts_with(&store))
        .collect();
    assert!(files.contains(&root().join("src/app.rs")), "src/ not found");
    assert_none(&check(&files, engine_rule));
}

#[test]
fn the_domain_rule_reports_io() {
    let violations = check(&[fixture("domain_does_io.rs")], domain_rule);
    assert_eq!(
        reported(&violations),
        [
            "std::fs",
            "std::fs::read_to_string",
            "tokio::fs::write",
            "tokio::net::TcpStream::connect"
        ]
    );
}

#[test]
fn the_domain_rule_reports_clock_reads() {
    let violations = check(&[fixture("domain_reads_clock.rs")], domain_rule);
    assert_eq!(
        reported(&violations),
        [
            "std::time::SystemTime::now",
            "std::time::Instant::now",
            ".elapsed()"
        ]
    );
}

#[test]
fn the_domain_rule_reports_grpc() {
    let violations = check(&[fixture("domain_uses_protocol.rs")], domain_rule);
    assert_eq!(
        reported(&violations),
        [
            "prost::Message",
            "tonic::Status",
            "tonic::Status::invalid_argument",
            "crate::wire::proto::v1::Empty"
        ]
    );
}

#[test]
fn the_engine_rule_and_the_domain_rule_report_an_engine() {
    let expected = [
        "fjall::Database",
        "sled::Result",
        "sled::Db",
        "sled::open",
        "crate::store::sled::SledStore",
    ];
    for rule in [engine_rule as Rule, domain_rule] {
        let violations = check(&[fixture("engine_outside_store.rs")], rule);
        assert_eq!(reported(&violations), expected);
    }
}

#[test]
fn no_rule_reports_names_in_comments_or_literals() {
    let files = [fixture("mentions_only.rs")];
    for rule in [domain_rule as Rule, engine_rule, grpc_rule, service_rule] {
        assert_none(&check(&files, rule));
    }
    // Not vacuous: the code around those mentions was read.
    let source = fs::read_to_string(&files[0]).expect("the fixture");
    let names: Vec<String> = Names::of(&source)
        .expect("it parses")
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    for read in ["std::time::SystemTime", "EngineKind::Sled", ".len()"] {
        assert!(
            names.iter().any(|name| name == read),
            "{read} not among {names:?}"
        );
    }
}

/// The byte strings of one file's code that are parts of a key, by line: each non-empty byte
/// string literal among the arguments of a call to `key` or to a function whose name ends in
/// `_key`, among the key arguments of a `Txn` method (the ones after a `Table::…` first
/// argument, its value excepted), and, in the service (the store's one user), in a `const` or
/// `static`: elsewhere byte-string constants are other things (hex digits, signing contexts).
/// The empty byte string spells no layout (the whole table, an empty value) and counts nowhere.
/// Macros' inputs are read when they parse as expressions separated by commas (`assert_eq!`,
/// `vec!`). A literal reported twice (a `key(…)` inside a `Txn` call) counts once.
#[derive(Default)]
struct KeyLiterals {
    /// Line, column and the literal as written.
    found: Vec<(usize, usize, String)>,
    /// Whether constants count.
    consts: bool,
}

/// The `Txn` methods and how many of their arguments after the table are key arguments.
const KEYED_METHODS: [(&str, usize); 6] = [
    ("get", 1),
    ("put", 1),
    ("put_row", 1),
    ("delete", 1),
    ("scan_prefix", 1),
    ("scan_range", 2),
];

impl KeyLiterals {
    fn of(source: &str, consts: bool) -> syn::Result<Vec<(usize, String)>> {
        let mut literals = KeyLiterals {
            found: Vec::new(),
            consts,
        };
        literals.visit_file(&syn::parse_file(source)?);
        literals.found.sort();
        literals.found.dedup();
        Ok(literals
            .found
            .into_iter()
            .map(|(line, _, lit)| (line, lit))
            .collect())
    }

    /// Notes every non-empty byte string inside `expr`.
    fn key_part(&mut self, expr: &Expr) {
        struct Within<'a>(&'a mut Vec<(usize, usize, String)>);
        impl<'ast> Visit<'ast> for Within<'_> {
            fn visit_expr_lit(&mut self, lit: &'ast ExprLit) {
                if let Lit::ByteStr(bytes) = &lit.lit
                    && !bytes.value().is_empty()
                {
                    let at = bytes.span().start();
                    self.0.push((at.line, at.column, bytes.token().to_string()));
                }
            }
            fn visit_macro(&mut self, mac: &'ast syn::Macro) {
                for expr in macro_exprs(mac) {
                    self.visit_expr(&expr);
                }
            }
        }
        Within(&mut self.found).visit_expr(expr);
    }
}

/// A macro's input as expressions separated by commas, or none if it does not parse so.
fn macro_exprs(mac: &syn::Macro) -> Vec<Expr> {
    Punctuated::<Expr, Token![,]>::parse_terminated
        .parse2(mac.tokens.clone())
        .map(|exprs| exprs.into_iter().collect())
        .unwrap_or_default()
}

impl<'ast> Visit<'ast> for KeyLiterals {
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let Expr::Path(path) = &*call.func
            && let Some(last) = path.path.segments.last()
            && (last.ident == "key" || last.ident.to_string().ends_with("_key"))
        {
            call.args.iter().for_each(|arg| self.key_part(arg));
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let names_a_table = |arg: Option<&Expr>| matches!(arg, Some(Expr::Path(p)) if p.path.segments.iter().any(|s| s.ident == "Table"));
        let keyed = KEYED_METHODS.iter().find(|(m, _)| call.method == m);
        if let Some((_, keys)) = keyed
            && names_a_table(call.args.first())
        {
            call.args
                .iter()
                .skip(1)
                .take(*keys)
                .for_each(|arg| self.key_part(arg));
        }
        visit::visit_expr_method_call(self, call);
    }

    fn visit_item_const(&mut self, item: &'ast syn::ItemConst) {
        if self.consts {
            self.key_part(&item.expr);
        }
        visit::visit_item_const(self, item);
    }

    fn visit_item_static(&mut self, item: &'ast syn::ItemStatic) {
        if self.consts {
            self.key_part(&item.expr);
        }
        visit::visit_item_static(self, item);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        for expr in macro_exprs(mac) {
            self.visit_expr(&expr);
        }
    }
}

/// The key parts spelled in `files`, as `file:line: literal`; constants count in the files
/// under `consts_under`.
fn key_literals(files: &[PathBuf], consts_under: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let source =
            fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let literals = KeyLiterals::of(&source, file.starts_with(consts_under))
            .unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        let shown = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        found.extend(
            literals
                .into_iter()
                .map(|(line, lit)| format!("{shown}:{line}: {lit}")),
        );
    }
    found
}

#[test]
fn only_the_schema_lays_out_keys() {
    let (schema, store) = (root().join("src/service/schema"), root().join("src/store"));
    let files: Vec<PathBuf> = rust_files(&root().join("src"))
        .into_iter()
        .filter(|file| !file.starts_with(&schema) && !file.starts_with(&store))
        .collect();
    assert!(
        files.contains(&root().join("src/service/events.rs")),
        "src/ not found"
    );
    let service = root().join("src/service");
    assert_eq!(key_literals(&files, &service), Vec::<String>::new());
}

#[test]
fn the_key_rule_reports_key_parts_and_nothing_else() {
    let file = fixture("keys_outside_schema.rs");
    let reported: Vec<String> = key_literals(std::slice::from_ref(&file), &file)
        .into_iter()
        .map(|found| found.rsplit(": ").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        reported,
        [
            r#"b"import\0""#,
            r#"b"override""#,
            r#"b"relay\0acked""#,
            r#"b"patient\0""#,
            r#"b"pharmacy\x01""#,
            r#"b"accepted""#,
            r#"b"expiry""#,
        ]
    );
}

/// Forbids the stored records (`service::records`, by any route: `crate::`, `super::super::`, a
/// renamed import): the gRPC layer sees the service's own types, never how a version of a record
/// is stored.
fn grpc_rule(name: &Name) -> Option<&'static str> {
    match name {
        Name::Path(path) if path.windows(2).any(|pair| pair == ["service", "records"]) => {
            Some("a stored record")
        }
        _ => None,
    }
}

/// The generated types the service may name: the signed documents (each message and enum of
/// `proto/rxgate/v1/documents.proto`, whose content a use case verifies and reads) and the
/// relay's signed statement (`RelayStatement`, which an intake verifies). The rest of the
/// generated types are the RPCs' requests, responses and their parts, which only `grpc/`
/// converts.
fn signed_types() -> &'static [String] {
    static SIGNED: OnceLock<Vec<String>> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let path = root().join("proto/rxgate/v1/documents.proto");
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut names: Vec<String> = (text.lines())
            .filter_map(|line| {
                let rest = line
                    .strip_prefix("message ")
                    .or(line.strip_prefix("enum "))?;
                rest.split_whitespace().next().map(str::to_owned)
            })
            .collect();
        assert!(
            names.iter().any(|n| n == "Prescription"),
            "no documents in {}",
            path.display()
        );
        names.push("RelayStatement".to_owned());
        names
    })
}

/// The module prost puts a message's nested types in: `PatientKey` → `patient_key`.
fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

/// Forbids, among the generated types (`wire::proto::v1::…`), all but the signed ones and their
/// nested types: the service takes and returns its own types, never an RPC's messages. The
/// package module itself (`use crate::wire::proto::v1 as pb`) names no type, so a glob import
/// of it (`v1::*`) would go unseen: the service has none.
fn service_rule(name: &Name) -> Option<&'static str> {
    let Name::Path(path) = name else {
        return None;
    };
    let at = path.windows(2).position(|pair| pair == ["wire", "proto"])?;
    let named = path.get(at + 3)?;
    let signed = signed_types();
    let allowed = signed.iter().any(|t| t == named || snake_case(t) == *named);
    (!allowed).then_some("an RPC message: the service takes and returns its own types")
}

#[test]
fn the_grpc_layer_names_no_stored_record() {
    assert_none(&check(&source_files("grpc", "convert.rs"), grpc_rule));
}

#[test]
fn the_service_names_no_rpc_message() {
    assert_none(&check(&source_files("service", "records.rs"), service_rule));
}

#[test]
fn the_grpc_rule_reports_stored_records() {
    let violations = check(&[fixture("grpc_names_stored_records.rs")], grpc_rule);
    assert_eq!(
        reported(&violations),
        [
            "crate::service::records::ChainedV1",
            "crate::service::records::ConsentMethodV1",
            "crate::service::records::ConsentMethodV1::Card",
            "crate::service::records::ChainedV1",
            "crate::service::records::ChainedV1::Genesis",
            "super::super::service::records::EventKindV1::Expired",
        ]
    );
}

#[test]
fn the_service_rule_reports_rpc_messages_and_not_signed_documents() {
    let violations = check(&[fixture("service_names_rpc_messages.rs")], service_rule);
    assert_eq!(
        reported(&violations),
        [
            "crate::wire::proto::v1::RegisterPrescriptionRequest",
            "crate::wire::proto::v1::Event",
            "crate::wire::proto::v1::event_service_server::EventService",
            "crate::wire::proto::v1::RegisterPrescriptionResponse",
            "crate::wire::proto::v1::RegisterPrescriptionResponse",
        ]
    );
}

/// The packages of crypto providers other than ring: libcrypto builds and their bindings.
const OTHER_PROVIDERS: [&str; 5] = [
    "aws-lc-rs",
    "aws-lc-sys",
    "openssl",
    "openssl-sys",
    "boring-sys",
];

/// What breaks "ring is the one crypto provider" in the lock file at `path`: each package of
/// another provider, and ring's absence.
fn lock_problems(path: &Path) -> Vec<String> {
    #[derive(Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Package>,
    }
    #[derive(Deserialize)]
    struct Package {
        name: String,
    }
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let lock: Lock =
        toml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let mut problems: Vec<String> = (lock.package.iter())
        .filter(|package| OTHER_PROVIDERS.contains(&package.name.as_str()))
        .map(|package| format!("{}: a second crypto provider", package.name))
        .collect();
    if !lock.package.iter().any(|package| package.name == "ring") {
        problems.push("ring: missing".to_owned());
    }
    problems
}

#[test]
fn ring_is_the_only_crypto_provider() {
    assert_eq!(
        lock_problems(&root().join("Cargo.lock")),
        Vec::<String>::new()
    );
}

#[test]
fn the_lock_rule_reports_a_second_provider_and_a_missing_ring() {
    assert_eq!(
        lock_problems(&fixture("lock_second_provider.lock")),
        [
            "aws-lc-rs: a second crypto provider",
            "aws-lc-sys: a second crypto provider"
        ]
    );
    assert_eq!(
        lock_problems(&fixture("lock_without_ring.lock")),
        ["ring: missing"]
    );
    assert_eq!(
        lock_problems(&fixture("lock_ring_only.lock")),
        Vec::<String>::new()
    );
}

/// The variable whose value is the build machine's source folder.
const MANIFEST_DIR: &str = "CARGO_MANIFEST_DIR";

/// The lines of one file's code outside test code that name [`MANIFEST_DIR`]: a string literal
/// of exactly that value, in the code, in a macro's input (`env!`, nested in `concat!`) or in an
/// attribute's (`#[arg(default_value = …)]`). Test code is an item under `#[cfg(test)]` (a
/// module, a function, an associated function); a file that is a test module as a whole is
/// read as any other, so such a file keeps the name in a `#[cfg(test)]` item too.
#[derive(Default)]
struct ManifestDirs {
    lines: Vec<usize>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

impl ManifestDirs {
    fn of(source: &str) -> syn::Result<Vec<usize>> {
        let mut found = ManifestDirs::default();
        found.visit_file(&syn::parse_file(source)?);
        Ok(found.lines)
    }

    fn tokens(&mut self, tokens: TokenStream) {
        for token in tokens {
            match token {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Literal(literal) => {
                    if let Lit::Str(text) = Lit::new(literal) {
                        self.visit_lit_str(&text);
                    }
                }
                TokenTree::Ident(_) | TokenTree::Punct(_) => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for ManifestDirs {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Const(item) => &item.attrs,
            syn::Item::Enum(item) => &item.attrs,
            syn::Item::Fn(item) => &item.attrs,
            syn::Item::Impl(item) => &item.attrs,
            syn::Item::Macro(item) => &item.attrs,
            syn::Item::Mod(item) => &item.attrs,
            syn::Item::Static(item) => &item.attrs,
            syn::Item::Struct(item) => &item.attrs,
            _ => return visit::visit_item(self, item),
        };
        if !is_cfg_test(attrs) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&item.attrs) {
            visit::visit_impl_item_fn(self, item);
        }
    }

    fn visit_lit_str(&mut self, text: &'ast syn::LitStr) {
        if text.value() == MANIFEST_DIR {
            self.lines.push(text.span().start().line);
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        match &attr.meta {
            syn::Meta::List(list) => self.tokens(list.tokens.clone()),
            meta => visit::visit_meta(self, meta),
        }
    }
}

/// Where `files` name [`MANIFEST_DIR`] outside test code, as `file:line`.
fn manifest_dirs(files: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let source =
            fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let lines =
            ManifestDirs::of(&source).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        let shown = file.strip_prefix(root()).unwrap_or(file).display();
        found.extend(lines.into_iter().map(|line| format!("{shown}:{line}")));
    }
    found
}

#[test]
fn no_code_outside_tests_names_the_source_folder() {
    let mut files = rust_files(&root().join("src"));
    files.extend(rust_files(&root().join("loadtest/src")));
    for known in ["src/master_files.rs", "loadtest/src/cli.rs"] {
        assert!(files.contains(&root().join(known)), "{known} not found");
    }
    assert_eq!(manifest_dirs(&files), Vec::<String>::new());
}

#[test]
fn the_manifest_dir_rule_reports_code_and_not_tests_or_mentions() {
    let file = fixture("manifest_dir_outside_tests.rs");
    let lines: Vec<String> = manifest_dirs(std::slice::from_ref(&file))
        .iter()
        .map(|found| found.rsplit(':').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(lines, ["8", "13", "19"]);
}
