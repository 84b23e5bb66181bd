"""Fault drills (project issue 3): a 3-broker KRaft cluster, real workers, a real collector."""
