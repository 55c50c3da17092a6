"""Fake upstream servers on loopback that speak the providers' real wire formats."""
