"""hako's version and the runtime-spec version it implements."""

VERSION = "0.1.0"
SPEC_VERSION = "1.3.0"
