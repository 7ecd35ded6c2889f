"""Evidence: what an incident keeps as proof (snapshot, clip), privacy masks, and its retention."""
