"""The municipal adapter: delivers the outbox's parking and charging changes to the city platform."""
