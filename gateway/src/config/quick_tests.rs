//! The quick reader against toml: the same model (spans included) for every file it accepts,
//! `None` for what it leaves to toml, and errors still placed by toml.

use super::{parse, RawConfig};
use crate::config::{load_str, load_str_offline};

/// What toml makes of `src` (the reference).
fn by_toml(src: &str) -> RawConfig {
    toml::from_str(src).unwrap_or_else(|e| panic!("toml refuses a file the quick reader read: {e}\n{src}"))
}

/// Both readers' models, printed with every span, must be equal.
fn same_as_toml(src: &str) -> bool {
    match parse(src) {
        Some(quick) => {
            assert_eq!(format!("{quick:#?}"), format!("{:#?}", by_toml(src)), "models differ for:\n{src}");
            true
        }
        None => false,
    }
}

/// Every raw string literal of the gateway's sources and integration tests that looks like a
/// routes.toml (besides this, every file loaded by a debug build is read by both readers and
/// compared: see `assert_same_as_toml`).
fn corpus() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/");
    let mut out = vec![std::fs::read_to_string(format!("{dir}../routes.toml")).expect("the demo routes.toml")];
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(format!("{dir}src")), format!("{dir}tests").into()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("a source directory") {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).expect("a source file");
        for chunk in text.split("r#\"").skip(1) {
            let body = chunk.split("\"#").next().unwrap_or_default();
            // `{{` marks a format! template, not a file
            if body.contains("[defaults]") && !body.contains("{{") {
                out.push(body.to_string());
            }
        }
    }
    out
}

#[test]
fn reads_what_toml_reads_spans_included() {
    let files = corpus();
    let read = files.iter().filter(|src| same_as_toml(src)).count();
    // most of them are plain TOML: the quick reader must take them, not leave them all to toml
    assert!(read * 2 > files.len(), "read {read} of {} files", files.len());
}

#[test]
fn reads_a_generated_ten_thousand_route_file() {
    let mut src = String::from(
        "[gateway]\nlisten = \"127.0.0.1:8080\"\nthreads = 1\n\n[defaults]\nupstream = \"legacy\"\n\
         [upstreams.legacy]\nendpoints = [\"127.0.0.1:1\"]\n[upstreams.svc]\nendpoints = [\"127.0.0.1:2\"]\n",
    );
    for i in 0..10_000 {
        src.push_str(&format!("[[routes]]\nname = \"r{i}\"\n"));
        src.push_str(&match i % 4 {
            0 => format!("match = {{ path = \"/api/s{i}/items\" }}\nstage = \"legacy\"\n"),
            1 => format!("match = {{ path = \"/api/s{i}/items/{{id}}\" }}\nto = \"svc\"\nstage = \"extracted\"\n"),
            2 => format!("match = {{ path = \"/api/s{i}/files/**\" }}\nto = \"svc\"\nstage = \"extracted\"\n"),
            _ => format!(
                "match = {{ host = \"h{i}.example.com\", path = \"/api/s{i}/items/{{id}}\" }}\nto = \"svc\"\nstage = \"extracted\"\n"
            ),
        });
    }
    assert!(same_as_toml(&src));
}

#[test]
fn reads_the_plain_toml_it_claims() {
    let src = "# top\r\n[gateway]\r\nlisten = '127.0.0.1:8080' # a literal string\r\nh2c = true\n\
        trusted_proxies = [\n  \"10.0.0.0/8\", # a comment in an array\n  \"::1\",\n]\n\
        [gateway.access_log]\nsample = 0.25\n[defaults]\nupstream = \"legacy\"\n\
        [upstreams.legacy]\nendpoints = [\"127.0.0.1:1\"]\neject = { consecutive_failures = 3, duration = \"1s\" }\n\
        [upstreams.legacy.health_check]\npath = \"/h\"\nhealthy_threshold = 0\n\
        [upstreams]\n[[routes]]\nname = \"a\"\nmatch = { path = \"/a\", headers = { \"x-beta\" = \"1\" }, methods = [] }\n\
        stage = \"canary\"\nweight = -0\nto = \"legacy\"\nlabels = {}\n[routes.retry]\nattempts = 2\nbudget = 1\n\
        [[routes.rate_limit]]\nrps = 5\nby = [\"ip\", \"consumer\"]\n[[routes.rate_limit]]\nrpm = 60\n";
    assert!(same_as_toml(src));
}

#[test]
fn leaves_to_toml_what_it_does_not_know_or_toml_refuses() {
    let base = "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"127.0.0.1:1\"]\n";
    assert!(parse(base).is_some());
    for extra in [
        "[gateway]\nlisten = \"127.0.0.1:\\u0038080\"\n",   // an escape
        "[gateway]\nlisten = \"\"\"127.0.0.1:8080\"\"\"\n", // a multi-line string
        "[gateway]\nthreads = 1_0\n",                       // an underscore
        "[gateway]\nthreads = 0x10\n",                      // hex
        "[gateway]\nthreads = 010\n",                       // a leading zero (invalid)
        "[gateway]\nthreads = 1\nthreads = 2\n",            // a duplicate key (invalid)
        "[gateway]\nthreads = 1 2\n",                       // junk after a value (invalid)
        "[gateway]\nh2c = truthy\n",                        // not a boolean (invalid)
        "gateway.threads = 1\n",                            // a dotted key
        "[gateway]\nthreads = 1\n[gateway]\n",              // a table defined twice (invalid)
        "[[defaults]]\n",                                   // a table then an array (invalid)
        "[x]\nd = 1979-05-27\n",                            // a date
        "[x]\nf = 1e3\n",                                   // an exponent
        "[x]\nt = { a = 1, }\n",                            // a trailing comma
        "[x]\nt = { a = 1,\n b = 2 }\n",                    // an inline table over lines
        "[x]\nt = { a = 1 }\n[x.t]\n",                      // extending an inline table (invalid)
        "[x]\na = [1]\n[[x.a]]\n",                          // extending a static array (invalid)
        "[x]\ns = \"tab\there\"\nc = \"\u{7f}\"\n",         // a control character (invalid)
        "[x]\r s = 1\n",                                    // a bare carriage return (invalid)
        "[x]\ns = \"open\n",                                // an unterminated string (invalid)
        "[ \"quoted\" ]\n",                                 // a quoted header key
        "[gateway]\nunknown_key = 1\n",                     // not in the model
        "[gateway]\nthreads = \"one\"\n",                   // the wrong type
    ] {
        let src = format!("{base}{extra}");
        assert!(parse(&src).is_none(), "the quick reader took:\n{src}");
    }
    assert!(parse(&format!("\u{feff}{base}")).is_none());
}

/// A file the quick reader takes but whose compile fails is parsed again by toml: the error is
/// at its place. A file it leaves to toml gets toml's message and place.
#[test]
fn errors_are_placed_whichever_reader_took_the_file() {
    let src = "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"127.0.0.1:1\"]\n\
        [[routes]]\nname = \"a\"\nmatch = { path = \"/a\" }\nstage = \"legacy\"\n\
        [[routes]]\nname = \"b\"\nmatch = { path = \"/b\" }\nstage =   \"legacyy\"\n";
    assert!(parse(src).is_some(), "a valid TOML file, invalid config");
    let e = load_str_offline("t.toml", src).unwrap_err();
    assert_eq!(e.issues.len(), 1, "{e}");
    assert_eq!((e.issues[0].line, e.issues[0].column), (12, 11), "{e}");
    assert!(e.issues[0].message.contains("unknown stage \"legacyy\""), "{e}");

    // an unknown key (a deserialization error for the quick reader) and a second problem
    let typo = src.replace("name = \"a\"", "name = \"a\"\ntimout = \"2s\"");
    assert!(parse(&typo).is_none());
    let e = load_str("t.toml", &typo, None).unwrap_err();
    let places: Vec<_> = e.issues.iter().map(|i| (i.line, i.column)).collect();
    assert_eq!(places, [(7, 1), (13, 11)], "{e}");
    assert!(e.issues[0].message.starts_with("unknown field `timout`"), "{e}");

    // a syntax error the quick reader does not even try
    let broken = src.replace("match = { path = \"/b\" }", "match = { path = \"/b\" ");
    let e = load_str("t.toml", &broken, None).unwrap_err();
    assert_eq!((e.issues[0].line, e.issues[0].column), (12, 1), "{e}");
}

/// Differential check on files nobody wrote by hand: every file of the corpus, mutated at random
/// (bytes deleted, TOML punctuation and tokens inserted, lines doubled or swapped). Whatever the
/// quick reader takes, toml must take too, with the same model and spans; most mutants are
/// invalid and must be left to toml. Seeded, so a failure is reproducible.
#[test]
fn random_mutants_are_read_as_toml_reads_them_or_left_to_toml() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    const TOKENS: &[&str] = &[
        "\"",
        "'",
        "=",
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        ",",
        "\n",
        " ",
        "#",
        ".",
        "\\",
        "_",
        "0",
        "1",
        "-1",
        "+1",
        "1.5",
        "1e3",
        "true",
        "false",
        "inf",
        "nan",
        "\r\n",
        "\r",
        "\t",
        "\u{e9}",
        "x = 1\n",
        "[a]\n",
        "[[routes]]\n",
        "\"\"\"",
        "''",
        "{}",
        "[]",
    ];
    let mut rng = StdRng::seed_from_u64(0x5eed_0016);
    let files = corpus();
    let (mut taken, mut left) = (0usize, 0usize);
    for n in 0..4000 {
        let mut src = files[n % files.len()].clone();
        for _ in 0..rng.gen_range(1..=3) {
            let at = |rng: &mut StdRng, s: &str| {
                let mut i = rng.gen_range(0..=s.len());
                while !s.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            match rng.gen_range(0..4) {
                0 => {
                    let i = at(&mut rng, &src);
                    let mut j = (i + rng.gen_range(1..=3)).min(src.len());
                    while !src.is_char_boundary(j) {
                        j += 1;
                    }
                    src.replace_range(i..j, "");
                }
                1 => {
                    let i = at(&mut rng, &src);
                    src.insert_str(i, TOKENS[rng.gen_range(0..TOKENS.len())]);
                }
                _ => {
                    let mut lines: Vec<&str> = src.split_inclusive('\n').collect();
                    if lines.len() > 1 {
                        let (a, b) = (rng.gen_range(0..lines.len()), rng.gen_range(0..lines.len()));
                        if rng.gen_bool(0.5) {
                            lines.swap(a, b);
                        } else {
                            lines.insert(a, lines[b]);
                        }
                    }
                    src = lines.concat();
                }
            }
        }
        // `same_as_toml` panics when toml refuses what the quick reader took, or reads it otherwise
        if same_as_toml(&src) {
            taken += 1;
        } else {
            left += 1;
        }
    }
    // the mutants are a mix: some still plain valid TOML, most not
    assert!(taken > 100 && left > 1000, "taken {taken}, left to toml {left}");
}
