"""facesfm.eval"""
