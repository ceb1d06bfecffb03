"""What every v2x service shares: config, server factory, interceptors, auth, storage helpers."""
