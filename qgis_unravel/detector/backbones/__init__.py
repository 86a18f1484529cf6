"""detector/backbones."""
