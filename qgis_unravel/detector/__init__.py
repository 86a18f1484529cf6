"""The Oriented R-CNN network in plain PyTorch: build, load checkpoints, detect.

Import what you need from its modules (``detector.checkpoint.load_detector``,
``detector.oriented_rcnn.OrientedRCNN``, ...); this package file imports nothing, so that
``detector.config`` (pure Python: the fixed settings, ``Thresholds``, ``Normalization``) and
a single backbone can be imported without the whole network and its ops.
"""
