"""The locust users of `make load` (load/locustfile.py): one class per real client of the suite."""
