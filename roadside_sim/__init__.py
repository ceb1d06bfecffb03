"""The roadside simulator (`v2x sim`, `python -m roadside_sim`): a client from outside the suite that imports only
its contracts. SUMO traffic on the demo district's intersections (network, traffic, scenario), cameras and their
frames (cameras, render), ground truth and scoring (truth_log, score), gate plates (plates, gates), and the simple
key-coloured approach the roadside tests use (scene, approach)."""
