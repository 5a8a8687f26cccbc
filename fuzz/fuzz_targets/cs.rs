//! Fuzz the `.npy` / cryoSPARC `.cs` reader: arbitrary bytes must parse or give an
//! error, never panic or allocate beyond what the input justifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovar_core::io::cs::CsFile;
use recovar_core::io::npy::NpyArray;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = NpyArray::from_bytes(data) {
        let _ = a.to_f64();
        let _ = a.to_strings();
        for name in a.field_names() {
            let _ = a.field_f64(name);
            let _ = a.field_u64(name);
            let _ = a.field_i64(name);
            let _ = a.field_bytes_str(name);
        }
    }
    if let Ok(cs) = CsFile::from_bytes(data) {
        let _ = cs.blob_paths();
        let _ = cs.blob_indices();
        let _ = cs.blob_shape();
        let _ = cs.pixel_sizes();
        let _ = cs.poses("alignments3D/pose");
        let _ = cs.shifts("alignments3D/shift");
    }
});
