//! Login map (to be written).
