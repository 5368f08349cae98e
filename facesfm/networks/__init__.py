"""facesfm.networks"""
