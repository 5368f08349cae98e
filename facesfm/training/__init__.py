"""facesfm.training"""
