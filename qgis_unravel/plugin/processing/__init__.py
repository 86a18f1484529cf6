"""The Processing provider "UnravelNet" and its algorithm ``unravel:detect``."""
