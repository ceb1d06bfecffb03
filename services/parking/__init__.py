"""Parking service: lots, spots, occupancy, passages and availability queries (port 50053)."""
