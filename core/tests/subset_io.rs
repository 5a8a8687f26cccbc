//! Subset writers (`star::write_subset`, `cs::write_subset`) on the real RELION and
//! cryoSPARC fixtures in `shared/data`: the subset reads back with our parsers, its rows'
//! cells, poses and CTF equal the selected original rows, and everything else is copied
//! unchanged.

mod common;

use std::path::PathBuf;

use recovar_core::dataset::{
    CsCtfOptions, CsPoseOptions, CtfTable, PoseTable, StarCtfOptions, StarPoseOptions,
};
use recovar_core::io::cs::{self, CsFile};
use recovar_core::io::star::{self, StarFile};

fn fixture(name: &str) -> PathBuf {
    common::fixtures().join(name)
}

/// A spread of rows: reversed every other row, then a repeat of the first pick.
fn pick(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).rev().step_by(2).collect();
    v.push(v[0]);
    v
}

/// Lines of a file outside its particle rows, in order.
fn non_row_lines(text: &str, file: &StarFile) -> Vec<String> {
    let t = file.particles().unwrap();
    let rows: std::collections::HashSet<usize> =
        (0..t.n_rows()).map(|r| t.line_of_row(r).unwrap()).collect();
    text.split('\n')
        .enumerate()
        .filter(|(i, _)| !rows.contains(&(i + 1)))
        .map(|(_, l)| l.to_string())
        .collect()
}

struct StarCase {
    name: &'static str,
    pose: Option<StarPoseOptions>,
    ctf: Option<StarCtfOptions>,
}

fn star_cases() -> Vec<StarCase> {
    let d = |d: usize| StarPoseOptions {
        box_size: Some(d),
        apix: None,
    };
    let c = |d: usize, apix: f64| StarCtfOptions {
        box_size: Some(d),
        apix: Some(apix),
        ..Default::default()
    };
    vec![
        StarCase {
            name: "FinalRefinement-OriginalParticles-PfCRT.star",
            pose: Some(d(300)),
            ctf: Some(StarCtfOptions {
                amp_contrast: Some(0.1),
                ..c(300, 1.035)
            }),
        },
        StarCase {
            name: "relion31.star",
            pose: Some(StarPoseOptions::default()),
            ctf: Some(StarCtfOptions::default()),
        },
        StarCase {
            name: "relion31.v2.star",
            pose: Some(StarPoseOptions::default()),
            ctf: Some(StarCtfOptions::default()),
        },
        StarCase {
            name: "relion5.star",
            pose: Some(StarPoseOptions::default()),
            ctf: Some(StarCtfOptions::default()),
        },
        StarCase {
            name: "sta_testing_bin8.star",
            pose: Some(d(64)),
            ctf: Some(c(64, 14.56)),
        },
        StarCase {
            name: "toy_projections.star",
            pose: None,
            ctf: Some(c(30, 1.0)),
        },
        StarCase {
            name: "toy_projections_13.star",
            pose: None,
            ctf: Some(StarCtfOptions::default()),
        },
        StarCase {
            name: "empiar_10076_7.star",
            pose: None,
            ctf: Some(StarCtfOptions {
                phase_shift_deg: Some(0.0),
                ..c(320, 1.31)
            }),
        },
    ]
}

#[test]
fn star_subsets_keep_the_selected_rows_and_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = star_cases();
    cases.push(StarCase {
        name: "../recovar_small/particles.star",
        pose: Some(StarPoseOptions::default()),
        ctf: Some(StarCtfOptions::default()),
    });
    for case in cases {
        let src = fixture(case.name);
        let out = dir.path().join("subset.star");
        let orig = StarFile::read(&src).unwrap();
        let n = orig.particles().unwrap().n_rows();
        let rows = pick(n);
        assert_eq!(star::write_subset(&src, &rows, &out).unwrap(), rows.len());

        let sub = StarFile::read(&out).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let (ot, st) = (orig.particles().unwrap(), sub.particles().unwrap());
        assert_eq!(st.name(), ot.name(), "{}", case.name);
        assert_eq!(st.columns(), ot.columns(), "{}", case.name);
        assert_eq!(st.n_rows(), rows.len(), "{}", case.name);
        for (i, &r) in rows.iter().enumerate() {
            assert_eq!(st.row(i), ot.row(r), "{} row {i} (original {r})", case.name);
        }
        // Every other block equal, in the same order.
        let others = |f: &StarFile| -> Vec<_> {
            f.blocks()
                .iter()
                .filter(|b| b.name() != ot.name())
                .cloned()
                .collect()
        };
        assert_eq!(others(&sub), others(&orig), "{}", case.name);
        // And byte for byte outside the particle rows.
        let (otext, stext) = (
            std::fs::read_to_string(&src).unwrap(),
            std::fs::read_to_string(&out).unwrap(),
        );
        assert_eq!(
            non_row_lines(&stext, &sub),
            non_row_lines(&otext, &orig),
            "{}",
            case.name
        );

        if let Some(opts) = &case.pose {
            let a = PoseTable::from_star(&orig, &src, opts).unwrap();
            let b = PoseTable::from_star(&sub, &out, opts).unwrap();
            for (i, &r) in rows.iter().enumerate() {
                assert_eq!(b.rotations[i], a.rotations[r], "{} rot {i}", case.name);
                let (ta, tb) = (a.translations.as_ref(), b.translations.as_ref());
                assert_eq!(
                    tb.map(|t| t[i]),
                    ta.map(|t| t[r]),
                    "{} trans {i}",
                    case.name
                );
            }
        }
        if let Some(opts) = &case.ctf {
            let a = CtfTable::from_star(&orig, &src, opts).unwrap();
            let b = CtfTable::from_star(&sub, &out, opts).unwrap();
            for (i, &r) in rows.iter().enumerate() {
                assert_eq!(b.rows[i], a.rows[r], "{} ctf {i}", case.name);
            }
        }
    }
}

#[test]
fn star_identity_subset_is_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    for case in star_cases() {
        let src = fixture(case.name);
        let out = dir.path().join("all.star");
        let n = StarFile::read(&src).unwrap().particles().unwrap().n_rows();
        let rows: Vec<usize> = (0..n).collect();
        star::write_subset(&src, &rows, &out).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap(),
            "{}: keeping every row should copy the file unchanged",
            case.name
        );
    }
}

#[test]
fn star_subset_keeps_crlf_comments_and_other_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.star");
    let text = "# version 50001\r\n\r\ndata_general\r\n\r\n_rlnTomoName  'tomo 1'\r\n\r\n\
                data_particles\r\n\r\nloop_\r\n_rlnImageName #1\r\n_rlnDefocusU #2\r\n\
                1@a.mrcs   10000.0\r\n2@a.mrcs   11000.0\r\n3@a.mrcs   12000.0\r\n\r\n\
                # a trailing comment\r\n";
    std::fs::write(&src, text).unwrap();
    let out = dir.path().join("out.star");
    star::write_subset(&src, &[2, 0], &out).unwrap();
    let got = std::fs::read_to_string(&out).unwrap();
    let want = text.replace(
        "1@a.mrcs   10000.0\r\n2@a.mrcs   11000.0\r\n3@a.mrcs   12000.0\r\n",
        "3@a.mrcs   12000.0\r\n1@a.mrcs   10000.0\r\n",
    );
    assert_eq!(got, want);
}

#[test]
fn star_subset_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("relion31.star");
    let out = dir.path().join("out.star");
    let e = star::write_subset(&src, &[0, 5, 7], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("relion31.star"), "{e}");
    assert!(
        e.contains("2 of the 3 row indices are out of range") && e.contains("5 rows"),
        "{e}"
    );
    assert!(!out.exists());
    let e = star::write_subset(&src, &[], &out).unwrap_err().to_string();
    assert!(e.contains("relion31.star") && e.contains("no rows"), "{e}");
    let e = star::write_subset(&dir.path().join("missing.star"), &[0], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.star"), "{e}");
    // A subset smaller than another loop block would stop being the particle table.
    let two = dir.path().join("two.star");
    std::fs::write(
        &two,
        "data_particles\nloop_\n_rlnDefocusU\n1\n2\n3\n4\n\ndata_other\nloop_\n_rlnFoo\n1\n2\n",
    )
    .unwrap();
    let e = star::write_subset(&two, &[0], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("two.star") && e.contains("data_other"), "{e}");
    assert!(!out.exists());
}

/// The raw bytes of row `r` of a `.cs` file.
fn row_bytes(f: &CsFile, r: usize) -> &[u8] {
    let s = f.array().itemsize();
    &f.array().data()[r * s..(r + 1) * s]
}

#[test]
fn cs_subsets_keep_the_selected_rows_and_the_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "cryosparc_P12_J24_001_particles.cs",
        "cryosparc_J2_particles_exported.cs",
        "empiar_10076_7.cs",
    ] {
        let src = fixture(name);
        let out = dir.path().join("subset.cs");
        let orig = CsFile::read(&src).unwrap();
        let rows = pick(orig.len());
        assert_eq!(cs::write_subset(&src, &rows, &out).unwrap(), rows.len());
        let sub = CsFile::read(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sub.len(), rows.len(), "{name}");
        assert_eq!(sub.array().dtype(), orig.array().dtype(), "{name}");
        assert_eq!(sub.array().version(), orig.array().version(), "{name}");
        for (i, &r) in rows.iter().enumerate() {
            assert_eq!(row_bytes(&sub, i), row_bytes(&orig, r), "{name} row {i}");
        }
        // The header differs only in its shape; the data start keeps its alignment.
        let bytes = std::fs::read(&out).unwrap();
        let original = std::fs::read(&src).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let orig_len = u16::from_le_bytes([original[8], original[9]]) as usize;
        let align = if (10 + orig_len).is_multiple_of(64) {
            64
        } else {
            16
        };
        assert!((10 + header_len).is_multiple_of(align), "{name}");
        let header = String::from_utf8_lossy(&bytes[10..10 + header_len]).into_owned();
        assert!(
            header.contains(&format!("'shape': ({},)", rows.len())),
            "{name}: {header}"
        );

        let ctf_a = CtfTable::from_cs(&orig, &src, &CsCtfOptions::default()).unwrap();
        let ctf_b = CtfTable::from_cs(&sub, &out, &CsCtfOptions::default()).unwrap();
        for (i, &r) in rows.iter().enumerate() {
            assert_eq!(ctf_b.rows[i], ctf_a.rows[r], "{name} ctf {i}");
        }
        if orig.array().has_field("alignments3D/pose") {
            let a = PoseTable::from_cs(&orig, &src, &CsPoseOptions::default()).unwrap();
            let b = PoseTable::from_cs(&sub, &out, &CsPoseOptions::default()).unwrap();
            for (i, &r) in rows.iter().enumerate() {
                assert_eq!(b.rotations[i], a.rotations[r], "{name} rot {i}");
                let (ta, tb) = (a.translations.as_ref(), b.translations.as_ref());
                assert_eq!(tb.map(|t| t[i]), ta.map(|t| t[r]), "{name} trans {i}");
            }
        }
    }
}

#[test]
fn cs_identity_subset_is_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "cryosparc_P12_J24_001_particles.cs",
        "cryosparc_J2_particles_exported.cs",
        "empiar_10076_7.cs",
    ] {
        let src = fixture(name);
        let out = dir.path().join("all.cs");
        let n = CsFile::read(&src).unwrap().len();
        cs::write_subset(&src, &(0..n).collect::<Vec<_>>(), &out).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap(),
            "{name}: keeping every row should copy the file unchanged"
        );
    }
}

#[test]
fn cs_subset_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("empiar_10076_7.cs");
    let out = dir.path().join("out.cs");
    let e = cs::write_subset(&src, &[7], &out).unwrap_err().to_string();
    assert!(e.contains("empiar_10076_7.cs"), "{e}");
    assert!(e.contains("out of range") && e.contains("7 rows"), "{e}");
    let e = cs::write_subset(&src, &[], &out).unwrap_err().to_string();
    assert!(e.contains("no rows"), "{e}");
    let e = cs::write_subset(&fixture("relion31.star"), &[0], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("relion31.star"), "{e}");
    assert!(!out.exists());
}

/// The optional numpy cross-check: `np.load` reads the subset with the same dtype and rows.
#[test]
fn cs_subset_loads_in_numpy() {
    let Some(py) = common::python_with(&["numpy"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("cryosparc_P12_J24_001_particles.cs");
    let out = dir.path().join("subset.cs");
    cs::write_subset(&src, &[5, 3, 2018, 3], &out).unwrap();
    let script = "import sys, numpy as np\n\
                  a = np.load(sys.argv[1]); b = np.load(sys.argv[2])\n\
                  assert b.dtype == a.dtype, (a.dtype, b.dtype)\n\
                  assert b.shape == (4,), b.shape\n\
                  assert (b == a[[5, 3, 2018, 3]]).all()\n";
    let status = std::process::Command::new(py)
        .args(["-c", script])
        .arg(&src)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
}
