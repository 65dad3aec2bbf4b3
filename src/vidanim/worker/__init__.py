"""The worker: leases jobs, drives the providers, stores each video exactly once."""
