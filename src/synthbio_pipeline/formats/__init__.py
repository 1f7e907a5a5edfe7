"""What the data is written as: the streaming result parser, Parquet parts and merges, exports."""
