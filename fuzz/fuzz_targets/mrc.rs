//! Fuzz the MRC header parser and the in-memory volume reader with arbitrary bytes.
//! Neither may panic, and the reader may not allocate more than the input justifies
//! (libFuzzer's -rss_limit_mb / -malloc_limit_mb catch that).
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovar_core::io::mrc::{read_volume_bytes, MrcHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = MrcHeader::parse(data) {
        let _ = h.voxel_size();
        let _ = h.voxel_size_x();
        let _ = h.data_offset();
        let _ = h.data_size();
        let _ = h.check_length(data.len() as u64);
    }
    if let Ok(vol) = read_volume_bytes(data) {
        // A volume that was read must be consistent with its shape.
        let n: usize = vol.shape.iter().product();
        assert_eq!(n, vol.data.len());
        assert!(vol.data.len() <= data.len());
    }
});
