//! Verifying the signature of inbound mail against the key the key
//! service finds for its `From:` address, and the
//! `Authentication-Results` field that records the result (RFC 8601,
//! RFC 7281). (To be written: see the module's brief.)
