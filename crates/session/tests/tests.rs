//! Integration tests of authkeeper-session (one binary; modules below).
