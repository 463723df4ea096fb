"""The data lake (Parquet tables read with DuckDB) and erasure of a card's data."""
