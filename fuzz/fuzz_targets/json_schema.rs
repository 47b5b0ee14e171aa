#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| neotenant_fuzzing::json_schema(data));
