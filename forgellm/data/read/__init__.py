"""Reading rows from the user's files: encodings, CSV/JSON/Parquet/text readers, format detection."""
