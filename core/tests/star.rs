//! STAR reader/writer tests: every fixture parses, row counts, cryoDRGN's optics rules,
//! agreement with cryoDRGN's CTF oracles, bad input, round trips, and (when a Python
//! with the `starfile` package is available) interoperability.
//!
//! Data live in the repository's sibling folder `shared/data` (see
//! `shared/data/cryodrgn_fixtures/README.md` and `cryodrgn_oracles/README.md`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use recovar_core::io::star::{StarFile, StarTable};

fn data_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    assert!(
        d.join("cryodrgn_fixtures").is_dir(),
        "test data not found at {}: these tests need the shared data folder \
         (shared/data next to the repository root, with cryodrgn_fixtures/ and cryodrgn_oracles/)",
        d.display()
    );
    d
}

fn fixtures() -> PathBuf {
    data_dir().join("cryodrgn_fixtures")
}

fn oracles() -> PathBuf {
    data_dir().join("cryodrgn_oracles")
}

fn read_star(name: &str) -> StarFile {
    let p = fixtures().join(name);
    StarFile::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn all_star_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "star"))
        .collect();
    v.sort();
    v.push(data_dir().join("recovar_small/particles.star"));
    v
}

/// Rows of a `np.savetxt` oracle dump (lines starting with `#` skipped).
fn oracle_rows(name: &str) -> Vec<Vec<f64>> {
    let p = oracles().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) || (a - b).abs() < 1e-300
}

#[test]
fn every_fixture_parses_with_expected_row_counts() {
    let expected: BTreeMap<&str, usize> = [
        ("FinalRefinement-OriginalParticles-PfCRT.star", 5),
        ("relion31.star", 5),
        ("relion31.v2.star", 5),
        ("relion5.star", 17),
        ("sta_testing.star", 219),
        ("sta_testing_bin8.star", 219),
        ("toy_projections.star", 1000),
        ("toy.star", 1000),
        ("toy_projections_dir.star", 1000),
        ("toy_projections_13.star", 13),
        ("empiar_10076_7.star", 7),
        ("particles.star", 1000),
    ]
    .into_iter()
    .collect();
    let files = all_star_files();
    assert!(
        files.len() >= 12,
        "expected at least 12 .star files, found {files:?}"
    );
    for p in files {
        let f = StarFile::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let name = p.file_name().unwrap().to_str().unwrap();
        let parts = f.particles().unwrap();
        if let Some(&n) = expected.get(name) {
            assert_eq!(parts.n_rows(), n, "{name}");
        }
        // Every row has a line number and every cell is reachable.
        for r in 0..parts.n_rows() {
            assert!(parts.line_of_row(r).is_some());
            assert_eq!(parts.row(r).unwrap().len(), parts.columns().len());
        }
    }
}

#[test]
fn block_names_and_kinds() {
    let f = read_star("relion31.star");
    let names: Vec<&str> = f.blocks().iter().map(|b| b.name()).collect();
    assert_eq!(names, ["data_optics", "data_particles"]);
    assert_eq!(f.optics().unwrap().n_rows(), 1);
    assert!(f.block("particles").is_some());
    assert!(f.block("data_particles").unwrap().is_loop());
    let f = read_star("empiar_10076_7.star");
    assert_eq!(f.blocks()[0].name(), "data_");
    assert!(f.optics().is_none());
    let f = read_star("FinalRefinement-OriginalParticles-PfCRT.star");
    assert_eq!(f.particles().unwrap().name(), "data_images");
    assert_eq!(
        f.particles().unwrap().column_str("_rlnImageName").unwrap()[0],
        "000001@Extract/job012/FinalRefinement-OriginalParticles-PfCRT.mrcs"
    );
}

#[test]
fn optics_table_takes_precedence() {
    let f = read_star("toy_projections_13.star");
    let parts = f.particles().unwrap();
    assert!(!parts.has_column("_rlnOpticsGroup"));
    // The particle rows say Cs 0.001; the optics table says 0.01 and wins.
    assert_eq!(
        parts
            .column_f64("_rlnSphericalAberration")
            .unwrap()
            .unwrap()[0],
        0.001
    );
    let cs = f
        .optics_values_f64("_rlnSphericalAberration")
        .unwrap()
        .unwrap();
    assert_eq!(cs, vec![0.01; 13]);
    assert_eq!(
        f.optics_values_f64("_rlnVoltage").unwrap().unwrap(),
        vec![300.0; 13]
    );
    assert_eq!(
        f.optics_values_f64("_rlnImageSize").unwrap().unwrap(),
        vec![300.0; 13]
    );
    assert_eq!(
        f.optics_values_f64("_rlnImagePixelSize").unwrap().unwrap(),
        vec![1.035; 13]
    );
    // Only in the particle table.
    assert_eq!(
        f.optics_values_f64("_rlnPhaseShift").unwrap().unwrap(),
        vec![90.0; 13]
    );
    // Nowhere.
    assert_eq!(f.optics_values_f64("_rlnNothing").unwrap(), None);
    assert_eq!(f.optics_values_str("_rlnNothing").unwrap(), None);
}

#[test]
fn optics_groups_are_looked_up_per_particle() {
    let text = "\
data_optics
loop_
_rlnOpticsGroup #1
_rlnVoltage #2
_rlnOpticsGroupName #3
1 300 g1
2 200 g2

data_particles
loop_
_rlnImageName #1
_rlnOpticsGroup #2
_rlnVoltage #3
1@a.mrcs 2 1
2@a.mrcs 1 1
3@a.mrcs 2.0 1
";
    let f = StarFile::parse(text).unwrap();
    assert_eq!(
        f.optics_values_f64("_rlnVoltage").unwrap().unwrap(),
        vec![200.0, 300.0, 200.0]
    );
    assert_eq!(
        f.optics_values_str("_rlnOpticsGroupName").unwrap().unwrap(),
        vec!["g2", "g1", "g2"]
    );
    let bad = text.replace("3@a.mrcs 2.0 1", "3@a.mrcs 7 1");
    let e = StarFile::parse(&bad)
        .unwrap()
        .optics_values_f64("_rlnVoltage")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("7") && e.contains("not in data_optics") && e.contains("line 16"),
        "{e}"
    );
}

#[test]
fn relion31_block_order_does_not_matter() {
    let a = read_star("relion31.star");
    let b = read_star("relion31.v2.star");
    assert_eq!(a.particles().unwrap(), b.particles().unwrap());
    assert_eq!(a.optics().unwrap(), b.optics().unwrap());
    assert_eq!(b.blocks()[0].name(), "data_particles");
    for field in ["_rlnImagePixelSize", "_rlnDefocusU", "_rlnVoltage"] {
        assert_eq!(
            a.optics_values_f64(field).unwrap(),
            b.optics_values_f64(field).unwrap()
        );
    }
}

#[test]
fn relion5_bracket_values_are_strings() {
    let f = read_star("relion5.star");
    let odd = f.optics_values_str("_rlnOddZernike").unwrap().unwrap();
    assert_eq!(odd.len(), 17);
    assert_eq!(
        odd[0],
        "[0.0680480107376,0.0982451014894,-1.79877045848,0,0,-1.36333410593]"
    );
    let even = f.optics().unwrap().column_str("_rlnEvenZernike").unwrap();
    assert!(even[0].starts_with("[45.4677386628,") && even[0].ends_with(']'));
    // Not numbers: the error names the column.
    let e = f
        .optics_values_f64("_rlnOddZernike")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("_rlnOddZernike") && e.contains("not a number"),
        "{e}"
    );
    assert!(
        e.contains("relion5.star"),
        "error should name the file: {e}"
    );
    assert_eq!(
        f.optics_values_f64("_rlnImageSize").unwrap().unwrap(),
        vec![448.0; 17]
    );
}

/// Columns 2..8 of cryoDRGN's ctf.pkl (dfU dfV dfang kV Cs w ps), from the same
/// lookups `parse_ctf_star` makes, against the oracle text dumps.
#[test]
fn ctf_columns_match_cryodrgn_oracles() {
    // (star file, oracle, overrides for w and phase shift as passed to cryoDRGN)
    let cases: [(&str, &str, Option<f64>, Option<f64>); 11] = [
        (
            "FinalRefinement-OriginalParticles-PfCRT.star",
            "FinalRefinement-OriginalParticles-PfCRT.ctf.txt",
            Some(0.1),
            None,
        ),
        ("relion31.star", "relion31.ctf.txt", None, None),
        ("relion31.v2.star", "relion31.v2.ctf.txt", None, None),
        ("relion5.star", "relion5.ctf.txt", None, None),
        ("sta_testing.star", "sta_testing.ctf.txt", None, None),
        (
            "sta_testing_bin8.star",
            "sta_testing_bin8.ctf.txt",
            None,
            None,
        ),
        (
            "empiar_10076_7.star",
            "empiar_10076_7.star.ctf.txt",
            None,
            Some(0.0),
        ),
        (
            "toy_projections.star",
            "toy_projections.ctf.txt",
            None,
            None,
        ),
        ("toy.star", "toy.ctf.txt", None, None),
        (
            "toy_projections_dir.star",
            "toy_projections_dir.ctf.txt",
            None,
            None,
        ),
        (
            "toy_projections_13.star",
            "toy_projections_13.ctf.txt",
            None,
            None,
        ),
    ];
    let fields = [
        "_rlnDefocusU",
        "_rlnDefocusV",
        "_rlnDefocusAngle",
        "_rlnVoltage",
        "_rlnSphericalAberration",
        "_rlnAmplitudeContrast",
        "_rlnPhaseShift",
    ];
    for (star, oracle, w, ps) in cases {
        let f = read_star(star);
        let want = oracle_rows(oracle);
        let n = f.particles().unwrap().n_rows();
        assert_eq!(want.len(), n, "{star}: row count vs oracle");
        let mut cols: Vec<Vec<f64>> = Vec::new();
        for (i, field) in fields.iter().enumerate() {
            let over = match i {
                5 => w,
                6 => ps,
                _ => None,
            };
            let col = match over {
                Some(v) => vec![v; n],
                None => f
                    .optics_values_f64(field)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{star}: {field} missing")),
            };
            cols.push(col);
        }
        // D and Apix when the file carries them (otherwise cryoDRGN got -D/--Apix).
        let d = f.optics_values_f64("_rlnImageSize").unwrap();
        let apix = f.optics_values_f64("_rlnImagePixelSize").unwrap();
        for (r, row) in want.iter().enumerate() {
            for (i, col) in cols.iter().enumerate() {
                assert!(
                    close(col[r], row[i + 2], 1e-6),
                    "{star} row {r} {}: ours {} oracle {}",
                    fields[i],
                    col[r],
                    row[i + 2]
                );
            }
            if let (Some(d), Some(a)) = (&d, &apix) {
                assert!(close(d[r], row[0], 1e-6), "{star} D");
                assert!(
                    close(a[r], row[1], 1e-6),
                    "{star} Apix {} vs {}",
                    a[r],
                    row[1]
                );
            }
        }
    }
}

#[test]
fn fixtures_round_trip_through_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    for p in all_star_files() {
        let f = StarFile::read(&p).unwrap();
        let out = dir.path().join(p.file_name().unwrap());
        f.write(&out).unwrap();
        let back = StarFile::read(&out).unwrap();
        assert_eq!(back.blocks(), f.blocks(), "{}", p.display());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("# version 30001"));
        assert!(text.contains("loop_"));
    }
}

#[test]
fn robust_syntax() {
    let text = "\u{feff}# a comment\r\n\r\ndata_general\r\n_rlnFinalResolution 3.5 # note\r\n_rlnName 'a b'\r\n\
                \r\ndata_\r\n\r\nloop_ \r\n_rlnA #1 \r\n_rlnB #2\t\r\n# comment between header and rows\r\n\
                \"x y\" 'it's'   \r\n\r\n  2@b.mrcs#3   [0.1,0.2]  \r\n";
    let f = StarFile::parse(text).unwrap();
    let g = f.block("data_general").unwrap();
    assert!(!g.is_loop());
    assert_eq!(g.n_rows(), 1);
    assert_eq!(
        g.column_f64("_rlnFinalResolution").unwrap().unwrap(),
        vec![3.5]
    );
    assert_eq!(g.cell(0, 1), "a b");
    let t = f.block("data_").unwrap();
    assert_eq!(t.columns(), ["_rlnA", "_rlnB"]);
    assert_eq!(t.n_rows(), 2);
    assert_eq!(t.row(0).unwrap(), vec!["x y", "it's"]);
    assert_eq!(t.row(1).unwrap(), vec!["2@b.mrcs#3", "[0.1,0.2]"]);
    assert_eq!(t.line_of_row(1), Some(15));
    // A key/value block is never the particle table.
    assert_eq!(f.particles().unwrap().name(), "data_");
    // Empty blocks and empty loops are kept.
    let f = StarFile::parse("data_a\n\ndata_b\nloop_\n_x\n_y\n").unwrap();
    assert_eq!(f.blocks().len(), 2);
    assert_eq!(f.blocks()[0].n_rows(), 0);
    assert_eq!(f.blocks()[1].columns().len(), 2);
    assert!(f.particles().is_err());
}

fn err_of(text: &str) -> String {
    match StarFile::parse(text) {
        Ok(_) => panic!("expected an error for {text:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_reported_with_block_and_line() {
    let e = err_of("data_particles\nloop_\n_a\n_b\n1 2\n3\n");
    assert!(
        e.contains("line 6") && e.contains("data_particles") && e.contains("1 values"),
        "{e}"
    );
    let e = err_of("data_p\nloop_\n_a\n_b\n1 2 3\n");
    assert!(
        e.contains("line 5") && e.contains("3 values") && e.contains("2 columns"),
        "{e}"
    );
    let e = err_of("data_p\nloop_\n_a\n_b\n1 \"2 3\n");
    assert!(e.contains("line 5") && e.contains("unterminated"), "{e}");
    let e = err_of("data_p\n_a 'x\n");
    assert!(e.contains("line 2") && e.contains("unterminated"), "{e}");
    let e = err_of("data_p\nloop_\n_a\n1\ndata_p\nloop_\n_a\n1\n");
    assert!(e.contains("line 5") && e.contains("twice"), "{e}");
    let e = err_of("data_p\nloop_\n_a\n_a\n");
    assert!(e.contains("line 4") && e.contains("twice"), "{e}");
    let e = err_of("hello\ndata_p\n");
    assert!(
        e.contains("line 1") && e.contains("before the first data_"),
        "{e}"
    );
    let e = err_of("data_p\n_k 1\nloop_\n_a\n1\n");
    assert!(e.contains("line 3") && e.contains("mixes"), "{e}");
    let e = err_of("data_p\nloop_\n_a\n1\nloop_\n_b\n2\n");
    assert!(e.contains("line 5") && e.contains("second loop_"), "{e}");
    let e = err_of("data_p\nloop_\n1 2\n");
    assert!(
        e.contains("line 3") && e.contains("before any column"),
        "{e}"
    );
    let e = err_of("data_\n_rlnA #1\n_rlnB #2\n1 2\n");
    assert!(
        e.contains("line 2") && e.contains("_rlnA") && e.contains("loop_"),
        "{e}"
    );
    let e = err_of("data_p\n_k\n");
    assert!(e.contains("line 2") && e.contains("no value"), "{e}");
    let e = err_of("data_p\n_k 1 2\n");
    assert!(
        e.contains("line 2") && e.contains("more than one value"),
        "{e}"
    );
    let e = err_of("data_p\n_k\n;abc\n");
    assert!(e.contains("never closed"), "{e}");
    let e = err_of("data_p\nsave_frame\n");
    assert!(e.contains("save_"), "{e}");
    let e = err_of("data_p\n1 2\n");
    assert!(e.contains("line 2") && e.contains("unexpected text"), "{e}");

    // Non-numeric text in a numeric column: the message names column, row, line, text.
    let f = StarFile::parse("# c\ndata_p\nloop_\n_rlnDefocusU #1\n_rlnB #2\n1.0 a\n2.0 b\nabc c\n")
        .unwrap();
    let e = f
        .particles()
        .unwrap()
        .column_f64("_rlnDefocusU")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("_rlnDefocusU")
            && e.contains("row 3")
            && e.contains("line 8")
            && e.contains("\"abc\""),
        "{e}"
    );
    assert_eq!(f.particles().unwrap().column_f64("_rlnNope").unwrap(), None);

    // A file error names the file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.star");
    std::fs::write(&p, "data_p\nloop_\n_a\n_b\n1\n").unwrap();
    let e = StarFile::read(&p).unwrap_err().to_string();
    assert!(e.contains("broken.star") && e.contains("line 5"), "{e}");
    std::fs::write(&p, b"data_p\n_a \xff\n").unwrap();
    let e = StarFile::read(&p).unwrap_err().to_string();
    assert!(e.contains("broken.star") && e.contains("UTF-8"), "{e}");
    let e = StarFile::read(dir.path().join("missing.star"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.star"), "{e}");
}

#[test]
fn writer_quotes_and_validates() {
    let mut t = StarTable::new(
        "data_particles",
        vec![
            "_rlnImageName".into(),
            "_rlnMicrographName".into(),
            "_rlnDefocusU".into(),
        ],
    );
    for row in [
        ["1@a b.mrcs", "", "1.5"],
        ["2@x.mrcs", "#hash", "-3e-04"],
        ["3@x.mrcs", "data_like", "_under"],
        ["4@x.mrcs", "it's \"q\"", "'"],
    ] {
        t.push_row(row.iter().map(|s| s.to_string()).collect())
            .unwrap();
    }
    assert!(t.push_row(vec!["only one".into()]).is_err());
    let kv = StarTable::from_pairs(
        "data_general",
        [
            ("_rlnFinalResolution".to_string(), "3.5".to_string()),
            ("_rlnName".into(), "a b".into()),
        ],
    )
    .unwrap();
    let mut f = StarFile::new();
    f.push_block(kv);
    f.push_block(t);
    let back = StarFile::parse(&f.to_text()).unwrap();
    assert_eq!(back.blocks(), f.blocks());

    // Unwritable content is refused by write().
    let dir = tempfile::tempdir().unwrap();
    let mut bad = StarFile::new();
    let mut t = StarTable::new("data_x", vec!["_a".into()]);
    t.push_row(vec!["line\nbreak".into()]).unwrap();
    bad.push_block(t);
    assert!(bad.write(dir.path().join("x.star")).is_err());
    let mut dup = StarFile::new();
    dup.push_block(StarTable::new("data_x", vec!["_a".into()]));
    dup.push_block(StarTable::new("data_x", vec!["_a".into()]));
    assert!(dup.validate().is_err());
    let mut badcol = StarFile::new();
    badcol.push_block(StarTable::new("data_x", vec!["a".into()]));
    assert!(badcol.validate().is_err());
    assert!(!dir.path().join("x.star").exists());
}

// ---------------------------------------------------------------------------------------
// Python interop (skipped without a Python that has `starfile`)
// ---------------------------------------------------------------------------------------

fn python() -> Option<String> {
    common::python_with(&["starfile", "numpy"])
}

/// Dump what `starfile.read` returns: per block a header line, the columns, and one
/// tab-separated line per row (numbers as repr, strings verbatim).
const DUMP_PY: &str = r#"
import sys, starfile
d = starfile.read(sys.argv[1], always_dict=True)
def cell(v):
    if isinstance(v, str):
        return v
    return repr(v.item() if hasattr(v, "item") else v)
for name, block in d.items():
    if isinstance(block, dict):
        print("BLOCK\t%s\tpairs\t1" % name)
        print("\t".join(block.keys()))
        print("\t".join(cell(v) for v in block.values()))
    else:
        print("BLOCK\t%s\tloop\t%d" % (name, len(block)))
        print("\t".join(block.columns))
        for row in block.itertuples(index=False):
            print("\t".join(cell(v) for v in row))
"#;

fn same_value(ours: &str, theirs: &str) -> bool {
    match (ours.parse::<f64>(), theirs.parse::<f64>()) {
        (Ok(a), Ok(b)) => close(a, b, 1e-12),
        _ => ours == theirs,
    }
}

fn check_python_reads(py: &str, f: &StarFile, path: &Path) {
    let out = Command::new(py)
        .args(["-c", DUMP_PY])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python starfile failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let mut n_blocks = 0;
    while let Some(h) = lines.next() {
        let parts: Vec<&str> = h.split('\t').collect();
        assert_eq!(parts[0], "BLOCK", "{h}");
        let ours = f
            .block(&format!("data_{}", parts[1]))
            .unwrap_or_else(|| panic!("block {}", parts[1]));
        assert_eq!(parts[2] == "loop", ours.is_loop(), "{}", ours.name());
        let n: usize = parts[3].parse().unwrap();
        assert_eq!(n, ours.n_rows(), "{}", ours.name());
        let cols: Vec<String> = lines
            .next()
            .unwrap()
            .split('\t')
            .map(|c| format!("_{c}"))
            .collect();
        assert_eq!(cols, ours.columns(), "{}", ours.name());
        for r in 0..n {
            let row: Vec<&str> = lines.next().unwrap().split('\t').collect();
            assert_eq!(row.len(), ours.columns().len());
            for (c, v) in row.iter().enumerate() {
                assert!(
                    same_value(ours.cell(r, c), v),
                    "{} row {r} col {}: ours {:?} python {:?}",
                    ours.name(),
                    ours.columns()[c],
                    ours.cell(r, c),
                    v
                );
            }
        }
        n_blocks += 1;
    }
    assert_eq!(n_blocks, f.blocks().len());
}

#[test]
fn python_starfile_reads_our_output() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Rewrites of fixtures (optics first, optics last, RELION 5 brackets, bare data_).
    for name in [
        "relion31.star",
        "relion31.v2.star",
        "relion5.star",
        "empiar_10076_7.star",
        "toy_projections_13.star",
    ] {
        let f = read_star(name);
        let out = dir.path().join(name);
        f.write(&out).unwrap();
        check_python_reads(&py, &f, &out);
    }
    // A built file with quoting and a key/value block.
    let mut t = StarTable::new(
        "data_particles",
        vec![
            "_rlnImageName".into(),
            "_rlnMicrographName".into(),
            "_rlnDefocusU".into(),
            "_rlnOpticsGroup".into(),
        ],
    );
    t.push_row(vec![
        "1@stack one.mrcs".into(),
        "mic #1.mrc".into(),
        "15000.5".into(),
        "1".into(),
    ])
    .unwrap();
    t.push_row(vec![
        "2@stack one.mrcs".into(),
        "mic 2.mrc".into(),
        "-3e-04".into(),
        "1".into(),
    ])
    .unwrap();
    let mut o = StarTable::new(
        "data_optics",
        vec!["_rlnOpticsGroup".into(), "_rlnVoltage".into()],
    );
    o.push_row(vec!["1".into(), "300".into()]).unwrap();
    let kv = StarTable::from_pairs(
        "data_general",
        [
            ("_rlnFinalResolution".to_string(), "3.5".to_string()),
            ("_rlnComment".into(), "two words".into()),
        ],
    )
    .unwrap();
    let mut f = StarFile::new();
    f.push_block(kv);
    f.push_block(o);
    f.push_block(t);
    let out = dir.path().join("built.star");
    f.write(&out).unwrap();
    check_python_reads(&py, &f, &out);
}
