//! Tests for the stream hub.

use super::*;
