"""A simulated roadside camera for tests, load and demos: scene geometry, vehicles, frames, plates."""
