//! The record batch checks a produce goes through before its batch is stored: the batch
//! header, then the walk over its records. No input may panic, and a batch the walk accepts
//! must parse again the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_storage::batch::parse_header;
use sluice_storage::records::validate_contents;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse_header(data) else {
        return;
    };
    let Some(batch) = data.get(..header.total_len()) else {
        return;
    };
    if validate_contents(batch, &header).is_ok() {
        let again = parse_header(batch).expect("an accepted batch parses");
        assert_eq!(again.total_len(), batch.len());
    }
});
