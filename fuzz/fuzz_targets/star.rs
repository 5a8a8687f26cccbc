//! Fuzz the STAR reader: arbitrary bytes (lossily decoded as UTF-8) must parse or give
//! an error, never panic. For files that parse and validate, the writer's output must
//! re-parse to the same tables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovar_core::io::star::StarFile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(f) = StarFile::parse(&text) else {
        return;
    };
    let _ = f.particles();
    let _ = f.optics_values_f64("_rlnVoltage");
    let _ = f.optics_values_str("_rlnImageName");
    for b in f.blocks() {
        for c in b.columns() {
            let _ = b.column_f64(c);
            let _ = b.column_str(c);
        }
    }
    if f.validate().is_ok() {
        let back = StarFile::parse(&f.to_text()).expect("written STAR text re-parses");
        assert_eq!(back.blocks(), f.blocks(), "STAR write/read round trip");
    }
});
