#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| autoencrypt_milter::fuzzing::protect_header(data));
