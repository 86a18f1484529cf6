"""Applications above the engine: the console script, the demo, the terminal UI, the worker server."""
