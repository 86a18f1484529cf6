"""DOTA-format datasets: ``labelTxt`` annotations, the split of large images into patches,
merging patch detections back into whole images, and the DOTA Task1 evaluation and submission.
"""
