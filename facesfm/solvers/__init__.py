"""facesfm.solvers"""
