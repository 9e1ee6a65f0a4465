//! Tests for the server session state machine.

use super::*;
