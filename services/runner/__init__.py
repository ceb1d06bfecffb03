"""`v2x run`: the whole suite on one machine, with embedded PostgreSQL/PostGIS and Redis by default."""
