#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| autoencrypt_milter::fuzzing::signature_verify(data));
