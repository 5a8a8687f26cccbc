//! Fuzz the pickle reader: any bytes must give `Ok` or `Err`, never a panic, a hang or a
//! huge allocation. Whatever decodes must also survive the writer (objects aside) and read
//! back to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovar_core::io::pickle::{dumps, loads};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = loads(data) {
        if let Ok(bytes) = dumps(&v) {
            let back = loads(&bytes).expect("our own output must read back");
            // Compare through the writer: NaN != NaN under PartialEq, bytes are exact.
            assert_eq!(dumps(&back).ok(), Some(bytes));
        }
    }
});
