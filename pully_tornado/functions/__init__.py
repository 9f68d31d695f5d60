"""Channel functions: per-channel middleware that transforms or drops each published message."""
