#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| autoencrypt_milter::fuzzing::transport_safe(data));
