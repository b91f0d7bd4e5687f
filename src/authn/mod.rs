//! Authentication: passwords now; sessions, API tokens and client certificates map to an
//! identity here too.

pub mod password;
