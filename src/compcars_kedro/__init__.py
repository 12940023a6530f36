"""compcars-kedro."""
