"""Ground floor: small helpers every layer shares (sequences, files, statistics); imports nothing
else from tttlab."""
