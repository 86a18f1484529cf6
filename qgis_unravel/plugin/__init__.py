"""The QGIS plugin: actions, dialog, background task, Processing provider.

It imports QGIS and never torch: detections run in a separate worker process (see
``worker_client``), so a missing torch, a CUDA error or a crashed worker never takes QGIS down.
"""
